"""The beets plugin's settings and what it loads from them, once per process.

``beet genreml``, ``beet genreml-playlist``, ``beet genreml-learn`` and the import stage
(beetsplug/genreml.py, thin commands) share one :class:`PluginState`: the models, their
per-label fields, the results cache's path and one :class:`tagger.tagging.Tagger` per cache,
each made on first use. :meth:`PluginState.reset` forgets them, so that the next command loads
them again (after ``beet genreml-learn`` wrote a personal head).

The models are those the process shared already (the watch daemon's,
:func:`tagger.beetsfields.shared_models`), else ``genreml.models`` with the personal heads as
``genreml.heads`` says (:func:`tagger.personal.load_run_models`).

Nothing here imports beets: the settings are a confuse view (beets' ``config["genreml"]``),
the log anything with ``debug`` and ``warning`` taking ``"{}"`` templates (beets' logger).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import confuse

from .beetsfields import label_fields, shared_models, written_record
from .modelmeta import ModelError
from .result import check_threshold
from .tags import MODES, V23_SEP, Policy

if TYPE_CHECKING:
    from .model import ModelSet
    from .tagging import Tagger

__all__ = ["DEFAULTS", "DEVICES", "PluginState"]

DEVICES = ("auto", "cpu", "cuda")

DEFAULTS: dict[str, Any] = {
    "models": None,      # folder (or file) of genreml ONNX models; null: bundled
    "heads": "auto",     # auto, default, personal or both (tagger.personal)
    "device": "auto",    # auto, cpu or cuda
    "threshold": None,   # genre threshold; null: the model's own
    "policy": "fill",    # fill, merge or force, for `genres` and `mood`
    "cache": None,       # results cache; null: the CLI's and daemon's default
    "auto": True,        # analyse items on import
    "write": None,       # write file tags; null: follow import.write
    "max_genres": None,  # at most this many genres; null: no limit
    "v23_sep": V23_SEP,  # joins genres in ID3v2.3 tags (Picard's v23_sep)
    "safe_only": False,  # refuse a file whose owner/mode/xattrs could not be kept
}


class Log(Protocol):
    """What :class:`PluginState` needs of beets' logger."""

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...


class PluginState:
    """The genreml plugin's settings (:data:`DEFAULTS`) and what it loads from them.

    Parameters
    ----------
    config : confuse.ConfigView
        The plugin's section of beets' configuration.
    log : Log
        The plugin's logger.
    """

    def __init__(self, config: confuse.ConfigView, log: Log) -> None:
        self.config = config
        self.log = log
        self._lock = threading.RLock()
        self._models: ModelSet | None = None
        self._error: Exception | None = None
        self._fields: dict[tuple[str, str], str] | None = None
        self._taggers: dict[tuple[Path, str | None], Tagger] = {}

    def policy(self, override: str | None = None) -> Policy:
        """``override`` (a mode name), else ``genreml.policy``."""
        return Policy.of(override or self.config["policy"].as_choice(MODES))

    def heads(self) -> str:
        """``genreml.heads``: ``auto``, ``default``, ``personal`` or ``both``."""
        from .personal import HEAD_CHOICES

        return str(self.config["heads"].as_choice(HEAD_CHOICES))

    def models(self) -> ModelSet:
        """The models, loaded on first use, once per process (or until :meth:`reset`); those
        the process shared already, if any (the watch daemon's).

        Raises
        ------
        tagger.model.ModelError
            The models cannot be loaded (remembered: asked again, it is raised again).
        """
        with self._lock:
            if self._models is None:
                self._models = shared_models()
            if self._models is None and self._error is None:
                try:
                    self._models = self._load(self.heads())
                except ModelError as err:
                    self._error = err
                else:
                    ids = ", ".join(dict.fromkeys(
                        i.id for i in self._models.identities.values()))
                    self.log.debug("models: {} on {}", ids, self._models.providers)
            if self._error is not None:
                raise self._error
            assert self._models is not None
            return self._models

    def _load(self, heads: str) -> ModelSet:
        from .personal import load_run_models

        folder = self.config["models"].get(confuse.Optional(confuse.Filename()))
        device = self.config["device"].as_choice(DEVICES)
        return load_run_models(folder, heads, device=device)

    def label_fields(self) -> dict[tuple[str, str], str]:
        """``(task, label) -> field`` for every label of the models; labels that slugify to
        nothing or to a field another label took are left out (with a warning)."""
        with self._lock:
            if self._fields is None:
                self._fields = label_fields(self.models(),
                                            lambda message: self.log.warning("{}", message))
            return self._fields

    def cache_path(self) -> Path:
        """``genreml.cache``, else the cache the CLI and the daemon use: a file analysed by
        one of them is not analysed again here."""
        from .cache import default_cache_path

        configured = self.config["cache"].get(confuse.Optional(confuse.Filename()))
        return Path(configured) if configured else default_cache_path()

    def tagger(self, heads: str | None = None) -> Tagger:
        """The tagger for the configured cache (models loaded on first use).

        Parameters
        ----------
        heads : str, optional
            Another choice of heads than ``genreml.heads`` (its models are this tagger's own).

        Raises
        ------
        tagger.model.ModelError, tagger.cache.CacheError
        ValueError
            ``genreml.threshold`` is not between 0 and 1.
        """
        path = self.cache_path()
        with self._lock:
            tagger = self._taggers.get((path, heads))
            if tagger is None:
                from .cache import Cache
                from .tagging import Tagger

                threshold = self.config["threshold"].get(confuse.Optional(float))
                check_threshold(threshold, "genreml.threshold")
                models = self.models() if heads is None else self._load(heads)
                tagger = Tagger(models, Cache(path), policy=self.policy(), write=False,
                                threshold=threshold,
                                max_genres=self.config["max_genres"].get(confuse.Optional(int)),
                                v23_sep=self.config["v23_sep"].as_str(),
                                safe_only=self.config["safe_only"].get(bool))
                self._taggers[(path, heads)] = tagger
            return tagger

    def learning_tagger(self) -> Tagger:
        """The tagger learning finds the tracks' embeddings with: :meth:`tagger`, or one with
        the default heads when the configured ones cannot be loaded (``heads: personal``
        before any personal head exists, or one learned on another backbone) — learning needs
        only the backbone.

        Raises
        ------
        tagger.model.ModelError, tagger.cache.CacheError
        ValueError
            ``genreml.threshold`` is not between 0 and 1.
        """
        try:
            return self.tagger()
        except ModelError as err:
            if self.heads() == "default":
                raise
            self.log.debug("learning with the default heads: {}", err)
            return self.tagger(heads="default")

    def write_file(self, item: Any, tagger: Tagger, id3v23: bool = False) -> bool:
        """Put a beets item's ``genres`` and ``mood`` into its file with genreml's safe writer
        (a download in progress is left alone, owner and xattrs are kept, ``v23_sep`` and
        ``safe_only`` apply). A changed file keeps the item unmodified (its ``mtime``) and is
        not a new file to ``tagger``'s cache, which records genreml's own values in it (the
        item's, :func:`tagger.beetsfields.written_record`).

        Returns
        -------
        bool
            Whether the file changed.

        Raises
        ------
        tagger.tags.TagError, OSError
        """
        from .tags import write_tags

        plan = write_tags(item.filepath, list(item.genres), item.get("mood") or None, "force",
                          id3_version=3 if id3v23 else None,
                          v23_sep=self.config["v23_sep"].as_str(),
                          safe_only=self.config["safe_only"].get(bool))
        if plan.changed:
            item.mtime = item.current_mtime()  # as beets' own write does: not "modified"
            tagger.cache.update_stat(item.filepath, written=written_record(item))
        return plan.changed

    def close(self) -> None:
        """Close the taggers' caches (the models stay)."""
        with self._lock:
            for tagger in self._taggers.values():
                tagger.cache.close()
            self._taggers.clear()

    def reset(self) -> None:
        """Close the taggers and forget the models, their fields and a loading error: the
        next use loads them again (a new personal head is picked up)."""
        with self._lock:
            self.close()
            self._models = None
            self._error = None
            self._fields = None
