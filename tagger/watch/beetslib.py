"""``genreml watch --beets``: each tagged file's result mirrored into its beets item.

The fields are the ones ``beet genreml`` sets (:mod:`tagger.beetsfields`, one mapping for
both), computed from the daemon's own models: the daemon shares them
(:func:`tagger.beetsfields.share_models`) before beets loads its plugins, so the genreml
plugin, which beets' configuration must name for the fields to be typed, loads no second set.
Only the library is updated: the daemon already wrote the file's tags, and beets notices the
new mtime as it does after any outside edit.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from ..beetsfields import apply_result, label_fields, share_models
from ..tags import Policy
from .service import DaemonError

if TYPE_CHECKING:
    from beets.library import Library

    from ..model import ModelSet
    from ..tagging import Outcome

log = logging.getLogger(__name__)

__all__ = ["BeetsLibrary"]


class BeetsLibrary:
    """Mirror each tagged file's result into its beets item (fields: ``genres``, ``mood``,
    ``genreml_*`` and one float per label).

    The library comes from beets' own config (``$BEETSDIR`` or ``~/.config/beets``).

    Parameters
    ----------
    models : ModelSet
        The daemon's loaded models: the per-label fields are theirs.
    policy : str
        ``fill``, ``merge`` or ``force`` for ``genres`` and ``mood``.
    library : beets.library.Library, optional
        The library to update (default: the one beets' config names).

    Raises
    ------
    DaemonError
        beets' config does not load the genreml plugin, or beets cannot open its library.
    """

    def __init__(self, models: ModelSet, policy: str = "fill",
                 library: Library | None = None) -> None:
        from beets import config, library as beets_library, plugins

        share_models(models)  # before the plugin is created and asks for models
        overrides: dict[str, Any] = {"policy": policy, "auto": False}
        config["genreml"].set(overrides)  # before the plugin is created and reads them
        plugins.load_plugins()
        if not any(p.name == "genreml" for p in plugins.find_plugins()):
            # tagger never imports beetsplug: beets loads it from its config, and types the
            # fields through it
            raise DaemonError("--beets needs the genreml plugin in beets' config "
                              "(plugins: genreml)")
        self.models = models
        self.policy = Policy.of(policy)
        self.fields = label_fields(models, log.warning)
        try:
            self.lib = library if library is not None else beets_library.Library(
                config["library"].as_path(), config["directory"].as_filename())
        except Exception as err:
            raise DaemonError(f"cannot open the beets library: {err}") from err
        self._lock = threading.Lock()
        # beets keeps the library folder in a context variable (paths inside it are stored
        # relative); a worker thread starts with an empty context, so updates run in this one
        # (one at a time: a context cannot be entered by two threads at once).
        self._context = contextvars.copy_context()
        log.info("beets library %s", os.fsdecode(self.lib.path))

    def update(self, outcome: Outcome) -> bool:
        """Set the fields of the item at ``outcome.path`` as ``beet genreml`` does; returns
        whether the file is in the library."""
        with self._lock:
            return self._context.run(self._update, outcome)

    def _update(self, outcome: Outcome) -> bool:
        from beets.dbcore.query import PathQuery

        item = self.lib.items(PathQuery("path", os.fsencode(outcome.path))).get()
        if item is None:
            log.debug("%s is not in the beets library", outcome.path)
            return False
        changed = apply_result(item, outcome.result, self.policy, self.fields)
        item.store()
        log.debug("beets item %s: %s", item.id, ", ".join(changed) or "unchanged")
        return True
