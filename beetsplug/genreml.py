"""genreml for beets: several genres and a dominant mood per track, from local ONNX models.

Thin commands over the :mod:`tagger` library; the analysis goes through
:meth:`tagger.tagging.Tagger.result_for`, so a file the ``genreml`` CLI or the watch daemon
already analysed is not analysed again.

Fields written per item:

``genres``              beets' own list field, under the ``fill`` / ``merge`` / ``force`` policy
                        (:func:`tagger.tags.plan_tags`, the same rule as for file tags)
``mood``                the dominant emotion, under the same policy; a media field, so
                        ``beet write`` puts it in the file (``TMOO`` / ``TXXX:MOOD`` / ``MOOD``)
``genreml_genres``      the model's genres, whatever the policy did to ``genres``
``genreml_mood``        the model's dominant emotion, whatever the policy did to ``mood``
``genreml_model``       the model id(s) the values come from
``genre_<label>``,      one float per model label (slugified), for range queries such as
``mood_<label>``        ``beet ls mood_calm:0.7..``

The results cache is the one the ``genreml`` CLI and the watch daemon use
(:func:`tagger.cache.default_cache_path`), unless ``genreml.cache`` names another. On import
the items are analysed once beets has copied or moved them (``import_task_files``), at their
final paths. File tags are written by :func:`tagger.tags.write_tags` (the same safe writer as
``genreml tag``), honouring ``v23_sep`` and ``safe_only``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import confuse

from beets import ui
from beets.dbcore import types
from beets.library import Item
from beets.plugins import BeetsPlugin, find_plugins
from tagger.beetsfields import MEDIA_FIELDS, field_name, label_fields, shared_models, slugify
from tagger.beetsfields import apply_result as set_fields
from tagger.moodfield import MoodField
from tagger.playlist import (PlaylistEntry, UnknownLabel, format_m3u, match_label,
                             write_text_atomically)
from tagger.report import RunCounts, failure_reason, format_result, printable, skip_reason
from tagger.result import check_threshold
from tagger.tags import MODES, V23_SEP, Policy

if TYPE_CHECKING:
    import optparse

    from beets.importer import ImportSession, ImportTask
    from beets.library import Library
    from tagger.model import ModelSet
    from tagger.result import TrackResult
    from tagger.tagging import Tagger

__all__ = ["GenremlPlugin", "field_name", "slugify"]  # the last two: tagger.beetsfields'

DEVICES = ("auto", "cpu", "cuda")
PROB_TYPE = types.Float(3)  # shown with three decimals: `beet ls -f '$mood_calm'` -> 0.734
DEFAULT_MOOD_MIN_PROB = 0.5


class GenremlPlugin(BeetsPlugin):
    """``beet genreml``, ``beet genreml-playlist`` and tagging on import."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.config.add({
            "models": None,      # folder (or file) of genreml ONNX models; null: bundled
            "device": "auto",    # auto, cpu or cuda
            "threshold": None,   # genre threshold; null: the model's own
            "policy": "fill",    # fill, merge or force, for `genres` and `mood`
            "cache": None,       # results cache; null: the CLI's and daemon's default
            "auto": True,        # analyse items on import
            "write": None,       # write file tags; null: follow import.write
            "max_genres": None,  # at most this many genres; null: no limit
            "v23_sep": V23_SEP,  # joins genres in ID3v2.3 tags (Picard's v23_sep)
            "safe_only": False,  # refuse a file whose owner/mode/xattrs could not be kept
        })
        self._lock = threading.RLock()
        self._model_set: ModelSet | None = None
        self._model_error: Exception | None = None
        self._fields: dict[tuple[str, str], str] | None = None
        self._taggers: dict[Path, Tagger] = {}
        self._import_failed = False
        self._in_item_types = False
        try:
            self.add_media_field("mood", MoodField())
        except ValueError:  # defined already (another plugin, or an earlier instance)
            Item._media_fields.add("mood")
        if self.config["auto"].get(bool):
            # after beets copied or moved the files: analyse (and cache) them where they stay
            self.register_listener("import_task_files", self.imported)
        self.register_listener("cli_exit", self._close)

    # -- configuration and lazy state

    @property
    def item_types(self) -> dict[str, types.Type]:
        """Typed fields; one float per label of the configured models.

        Without loadable models only the label-independent fields are typed: beets still
        starts, and ``beet genreml`` says what is wrong with the models.
        """
        out: dict[str, types.Type] = {"genreml_genres": types.MULTI_VALUE_DSV}
        if self._in_item_types:  # another plugin's item_types asked for ours
            return out
        try:
            fields = self._label_fields()
        except Exception as err:  # models or configuration: reported by the commands
            self._log.debug("no label fields: {}", err)
            return out
        # Another plugin may type a field of the same name (acousticbrainz: mood_happy);
        # two types for one field would stop beets, so theirs wins.
        others: set[str] = set()
        self._in_item_types = True
        try:
            for plugin in find_plugins():
                if plugin is not self:
                    with contextlib.suppress(Exception):
                        others.update(getattr(plugin, "item_types", {}) or {})
        finally:
            self._in_item_types = False
        for field in fields.values():
            if field in others:
                self._log.debug("{} is typed by another plugin; sharing it", field)
            else:
                out[field] = PROB_TYPE
        return out

    def policy(self, override: str | None = None) -> Policy:
        return Policy.of(override or self.config["policy"].as_choice(MODES))

    def _models(self) -> ModelSet:
        """The configured models, loaded on first use, once per process; those the process
        shared already, if any (the watch daemon's: :func:`tagger.beetsfields.share_models`).

        Raises
        ------
        tagger.model.ModelError
        """
        with self._lock:
            if self._model_set is None:
                self._model_set = shared_models()
            if self._model_set is None and self._model_error is None:
                from tagger.model import ModelError, load_models

                folder = self.config["models"].get(confuse.Optional(confuse.Filename()))
                device = self.config["device"].as_choice(DEVICES)
                try:
                    self._model_set = load_models(folder, device=device)
                except ModelError as err:
                    self._model_error = err
                else:
                    self._log.debug("models: {} on {}", self._model_ids(),
                                    self._model_set.providers)
            if self._model_error is not None:
                raise self._model_error
            assert self._model_set is not None
            return self._model_set

    def _model_ids(self) -> str:
        assert self._model_set is not None
        return ", ".join(dict.fromkeys(i.id for i in self._model_set.identities.values()))

    def _label_fields(self) -> dict[tuple[str, str], str]:
        """``(task, label) -> field`` for every label of the models; labels that slugify to
        nothing or to a field another label took are left out (with a warning)."""
        with self._lock:
            if self._fields is None:
                self._fields = label_fields(self._models(),
                                            lambda message: self._log.warning("{}", message))
            return self._fields

    def _cache_path(self) -> Path:
        """``genreml.cache``, else the cache the CLI and the daemon use: a file analysed by
        one of them is not analysed again here."""
        from tagger.cache import default_cache_path

        configured = self.config["cache"].get(confuse.Optional(confuse.Filename()))
        return Path(configured) if configured else default_cache_path()

    def _tagger(self, lib: Library | None = None) -> Tagger:
        """The tagger for the configured cache (models loaded on first use).

        Raises
        ------
        tagger.model.ModelError, tagger.cache.CacheError
        """
        path = self._cache_path()
        with self._lock:
            tagger = self._taggers.get(path)
            if tagger is None:
                from tagger.cache import Cache
                from tagger.tagging import Tagger

                threshold = self.config["threshold"].get(confuse.Optional(float))
                check_threshold(threshold, "genreml.threshold", ui.UserError)
                max_genres = self.config["max_genres"].get(confuse.Optional(int))
                tagger = Tagger(self._models(), Cache(path), policy=self.policy(), write=False,
                                threshold=threshold, max_genres=max_genres,
                                v23_sep=self.config["v23_sep"].as_str(),
                                safe_only=self.config["safe_only"].get(bool))
                self._taggers[path] = tagger
            return tagger

    def _tagger_or_fail(self, lib: Library) -> Tagger:
        from tagger.cache import CacheError
        from tagger.model import ModelError

        try:
            return self._tagger(lib)
        except (ModelError, CacheError) as err:
            raise ui.UserError(f"genreml: {err}") from err

    def _close(self, **_: Any) -> None:
        with self._lock:
            for tagger in self._taggers.values():
                tagger.cache.close()
            self._taggers.clear()

    # -- the work on one item

    def _result(self, item: Item, tagger: Tagger, reanalyse: bool = False,
                counts: RunCounts | None = None) -> tuple[TrackResult, str] | None:
        """The item's analysis (cache first), or None after logging why there is none (and
        counting the item as skipped or failed in ``counts``)."""
        counts = counts if counts is not None else RunCounts()
        try:
            return tagger.result_for(item.filepath, reanalyse=reanalyse)
        except Exception as err:  # one broken file must not end a library-wide run
            skipped = skip_reason(err)
            if skipped:
                counts.skipped += 1
                self._log.info("{}: skipped: {}", printable(item.filepath), skipped)
            else:
                counts.failed += 1
                self._log.error("{}: {}", printable(item.filepath), failure_reason(err))
                self._log.debug("traceback", exc_info=True)
        return None

    def apply_result(self, item: Item, result: TrackResult, policy: Policy) -> list[str]:
        """Set the item's fields from ``result`` (in memory); return the changed fields
        (:func:`tagger.beetsfields.apply_result`, with this plugin's label fields)."""
        return set_fields(item, result, policy, self._label_fields())

    def _write_file(self, item: Item, tagger: Tagger) -> bool:
        """Put the item's ``genres`` and ``mood`` into its file with genreml's safe writer
        (a download in progress is left alone, owner and xattrs are kept, ``v23_sep`` and
        ``safe_only`` apply); a failure is logged. Returns whether the file changed."""
        from beets import config
        from tagger.tags import TagError, write_tags

        try:
            plan = write_tags(item.filepath, list(item.genres), item.get("mood") or None,
                              "force", id3_version=3 if config["id3v23"].get(bool) else None,
                              v23_sep=self.config["v23_sep"].as_str(),
                              safe_only=self.config["safe_only"].get(bool))
        except (TagError, OSError) as err:
            self._log.error("{}: {}", printable(item.filepath), failure_reason(err))
            return False
        if plan.changed:
            item.mtime = item.current_mtime()  # as beets' own write does: not "modified"
            tagger.cache.update_stat(item.filepath)  # nor a new file to the cache
        return plan.changed

    @staticmethod
    def _summary(item: Item, result: TrackResult, source: str) -> str:
        return f"{format_result(result, format(item))} ({source})"

    # -- commands

    def commands(self) -> list[ui.Subcommand]:
        tag = ui.Subcommand("genreml", help="tag genres and mood from audio (local models)")
        tag.parser.usage += " [QUERY]"
        tag.parser.add_option("-p", "--pretend", action="store_true", default=False,
                              help="show what would change; store and write nothing")
        tag.parser.add_option("-f", "--force", action="store_true", default=False,
                              help="overwrite existing genres and mood (as lastgenre's and "
                                   "autobpm's -f; the same as --policy force)")
        tag.parser.add_option("-r", "--reanalyse", action="store_true", default=False,
                              help="analyse again even when the cache has a result")
        tag.parser.add_option("--policy", choices=MODES, default=None,
                              help="fill (default: keep existing genres / mood), merge "
                                   "(append) or force (replace)")
        tag.parser.add_option("-w", "--write", action="store_true", dest="write", default=None,
                              help="write tags to files (default: import.write)")
        tag.parser.add_option("-W", "--nowrite", action="store_false", dest="write",
                              help="don't write tags to files, only the library")
        tag.func = self.tag_command

        playlist = ui.Subcommand("genreml-playlist",
                                 help="write an M3U playlist by mood and/or genre probability")
        playlist.parser.usage += " [QUERY]"
        playlist.parser.add_option("--mood", help="order by this mood's probability")
        playlist.parser.add_option("--genre",
                                   help="only tracks the model tagged with this genre")
        playlist.parser.add_option(
            "--min-prob", type="float", default=None,
            help=f"lowest probability of the ordering label (the mood, else the genre); "
                 f"default {DEFAULT_MOOD_MIN_PROB} for a mood, none for a genre")
        playlist.parser.add_option("--limit", type="int", default=None,
                                   help="at most N tracks")
        playlist.parser.add_option("-o", "--output", metavar="FILE",
                                   help="write the playlist to FILE (default: stdout)")
        playlist.func = self.playlist_command
        return [tag, playlist]

    def tag_command(self, lib: Library, opts: optparse.Values, args: list[str]) -> None:
        """``beet genreml [-p] [-f] [-r] [--policy P] [-w|-W] [QUERY]``."""
        if opts.force and opts.policy not in (None, "force"):
            raise ui.UserError("-f/--force overwrites existing values: it cannot go with "
                               f"--policy {opts.policy}")
        policy = self.policy("force" if opts.force else opts.policy)
        write = self._should_write(opts.write)
        tagger = self._tagger_or_fail(lib)
        items = list(lib.items(args))
        counts = RunCounts()
        for item in self._progress(items):
            found = self._result(item, tagger, reanalyse=opts.reanalyse, counts=counts)
            if found is None:
                continue
            result, source = found
            changed = self.apply_result(item, result, policy)
            counts.add(bool(changed), source)
            with self._print_lock():
                ui.print_(self._summary(item, result, source))
                ui.show_model_changes(item, fields=MEDIA_FIELDS, print_obj=False)
            if opts.pretend:
                continue
            if write:
                self._write_file(item, tagger)
            item.store()
        self._log.info("{} items: {}", len(items), counts.line(dry_run=opts.pretend))

    def _should_write(self, option: bool | None = None) -> bool:
        """-w/-W, else ``genreml.write``, else beets' ``import.write``."""
        return ui.should_write(option if option is not None
                               else self.config["write"].get(confuse.Optional(bool)))

    def playlist_command(self, lib: Library, opts: optparse.Values, args: list[str]) -> None:
        """``beet genreml-playlist --mood M [--genre G] [--min-prob P] [--limit N] [-o F]``."""
        if not opts.mood and not opts.genre:
            raise ui.UserError("give --mood and/or --genre")
        task, label = ("emotion", opts.mood) if opts.mood else ("genre", opts.genre)
        key = self._known_field(task, label)
        min_prob = opts.min_prob if opts.min_prob is not None else (
            DEFAULT_MOOD_MIN_PROB if opts.mood else 0.0)
        items: Iterable[Item] = lib.items([*args, f"{key}:{min_prob}.."])
        if opts.genre:
            self._known_field("genre", opts.genre)
            want = slugify(opts.genre)  # genreml_genres holds the models' spelling
            items = [i for i in items
                     if want in {slugify(g) for g in i.get("genreml_genres") or []}]
        ordered = sorted(items, key=lambda i: (-float(i.get(key) or 0.0), str(i.filepath)))
        if opts.limit is not None:
            ordered = ordered[: max(opts.limit, 0)]
        text = format_m3u(m3u_entries(ordered))
        if opts.output:
            try:
                write_text_atomically(Path(opts.output), text)
            except OSError as err:
                raise ui.UserError(f"{opts.output}: {err.strerror or err}") from err
            self._log.info("{} tracks written to {}", len(ordered), opts.output)
        else:
            for line in text.splitlines():
                ui.print_(line)

    def _known_field(self, task: str, label: str) -> str:
        """The field of a label of the configured models, or a UserError listing them."""
        try:
            fields = self._label_fields()
        except Exception as err:
            raise ui.UserError(f"genreml: {err}") from err
        known = {lbl: field for (t, lbl), field in fields.items() if t == task}
        try:
            return known[match_label(label, known, "mood" if task == "emotion" else "genre")]
        except UnknownLabel as err:
            raise ui.UserError(str(err)) from err

    # -- import

    def imported(self, session: ImportSession, task: ImportTask) -> None:
        """``import_task_files``: analyse the new items where beets put them (after the copy
        or move, so the cache holds the library's path, not the source's); a file that fails
        is logged and skipped. Their file tags are written as ``beet genreml`` writes them
        (``genreml.write``, else ``import.write``): beets' own write is over by now.
        """
        if self._import_failed:
            return
        try:
            tagger = self._tagger(session.lib)
        except Exception as err:  # models or cache: say so once, never block the import
            self._import_failed = True
            self._log.error("genreml: not analysing imported items: {}", err)
            return
        policy = self.policy()
        write = self._should_write()
        for item in task.imported_items():
            found = self._result(item, tagger)
            if found is None:
                continue
            result, source = found
            self.apply_result(item, result, policy)
            if write:
                self._write_file(item, tagger)
            item.store()
            self._log.info("{}", self._summary(item, result, source))

    # -- output helpers

    @contextlib.contextmanager
    def _print_lock(self) -> Iterator[None]:
        """Print without garbling the progress bar (if one is shown)."""
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stdout):
            yield

    @staticmethod
    def _progress(items: Sequence[Item]) -> Iterable[Item]:
        """A progress bar on stderr for more than one item, when stderr is a terminal."""
        from tqdm import tqdm

        return tqdm(items, desc="genreml", unit="item", file=sys.stderr, leave=False,
                    disable=True if len(items) <= 1 else None, dynamic_ncols=True)


def m3u_entries(items: Iterable[Item]) -> list[PlaylistEntry]:
    """Playlist entries (``Artist - Title`` from the library, not the file) for items."""
    entries = []
    for item in items:
        title = item.title or item.filepath.stem
        entries.append(PlaylistEntry(os.fsdecode(item.path), item.length or None,
                                     f"{item.artist} - {title}" if item.artist else title))
    return entries
