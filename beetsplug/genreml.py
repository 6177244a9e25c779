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
``genreml_written_*``   the values of ``genres`` and ``mood`` genreml itself put there
``genre_<label>``,      one float per model label (slugified), for range queries such as
``mood_<label>``        ``beet ls mood_calm:0.7..``

The results cache is the one the ``genreml`` CLI and the watch daemon use
(:func:`tagger.cache.default_cache_path`), unless ``genreml.cache`` names another. On import
the items are analysed once beets has copied or moved them (``import_task_files``), at their
final paths. File tags are written by :func:`tagger.tags.write_tags` (the same safe writer as
``genreml tag``), honouring ``v23_sep`` and ``safe_only``.

``beet genreml-learn [QUERY]`` learns a personal head from the items' ``genres`` (or ``mood``)
that genreml did not write (:mod:`tagger.learn`); ``genreml.heads`` (``auto``: both heads
when a personal one exists and ``genreml.models`` is not set) says which heads tag. The
settings and what is loaded from them (models, label fields, cache, taggers) are
:class:`tagger.beetsstate.PluginState`'s.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import confuse

from beets import ui
from beets.dbcore import types
from beets.library import Item
from beets.plugins import BeetsPlugin, find_plugins
from tagger.beetsfields import MEDIA_FIELDS, WRITTEN_GENRES, field_name, slugify
from tagger.beetsfields import apply_result as set_fields
from tagger.beetsstate import DEFAULTS, PluginState
from tagger.learn import TASKS
from tagger.moodfield import MoodField
from tagger.playlist import (UnknownLabel, format_m3u, item_entries, match_label, rank_items,
                             write_text_atomically)
from tagger.report import RunCounts, failure_reason, format_result, printable, skip_reason
from tagger.tags import MODES, Policy

if TYPE_CHECKING:
    import optparse

    from beets.importer import ImportSession, ImportTask
    from beets.library import Library
    from tagger.result import TrackResult
    from tagger.tagging import Tagger

__all__ = ["GenremlPlugin", "field_name", "slugify"]  # the last two: tagger.beetsfields'

PROB_TYPE = types.Float(3)  # shown with three decimals: `beet ls -f '$mood_calm'` -> 0.734
DEFAULT_MOOD_MIN_PROB = 0.5
T = TypeVar("T")


class GenremlPlugin(BeetsPlugin):
    """``beet genreml``, ``beet genreml-playlist``, ``beet genreml-learn`` and tagging on
    import."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.config.add(DEFAULTS)
        self.state = PluginState(self.config, self._log)
        self._import_failed = False
        self._in_item_types = False
        try:
            self.add_media_field("mood", MoodField())
        except ValueError:  # defined already (another plugin, or an earlier instance)
            Item._media_fields.add("mood")
        if self.config["auto"].get(bool):
            # after beets copied or moved the files: analyse (and cache) them where they stay
            self.register_listener("import_task_files", self.imported)
        self.register_listener("cli_exit", lambda **_: self.state.close())

    # -- configuration and lazy state

    @property
    def item_types(self) -> dict[str, types.Type]:
        """Typed fields; one float per label of the configured models.

        Without loadable models only the label-independent fields are typed: beets still
        starts, and ``beet genreml`` says what is wrong with the models.
        """
        out: dict[str, types.Type] = {"genreml_genres": types.MULTI_VALUE_DSV,
                                      WRITTEN_GENRES: types.MULTI_VALUE_DSV}
        if self._in_item_types:  # another plugin's item_types asked for ours
            return out
        try:
            fields = self.state.label_fields()
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

    def _tagger_or_fail(self, learning: bool = False) -> Tagger:
        """The tagger (:meth:`PluginState.tagger`, or with ``learning``
        :meth:`PluginState.learning_tagger`), or a UserError saying what is wrong."""
        from tagger.cache import CacheError
        from tagger.model import ModelError

        try:
            return self.state.learning_tagger() if learning else self.state.tagger()
        except (ModelError, CacheError) as err:
            raise ui.UserError(f"genreml: {err}") from err
        except ValueError as err:  # genreml.threshold
            raise ui.UserError(str(err)) from err

    # -- the work on one item

    def _result(self, item: Item, tagger: Tagger, reanalyse: bool = False,
                counts: RunCounts | None = None) -> tuple[TrackResult, str] | None:
        """The item's analysis (cache first), or None after logging why there is none (and
        counting the item as skipped or failed in ``counts``)."""
        try:
            return tagger.result_for(item.filepath, reanalyse=reanalyse)
        except Exception as err:  # one broken file must not end a library-wide run
            self._failed(item.filepath, err, counts)
        return None

    def _failed(self, path: str | os.PathLike[str], err: Exception,
                counts: RunCounts | None = None) -> None:
        """Log one line on a file that could not be analysed (and count it)."""
        counts = counts if counts is not None else RunCounts()
        skipped = skip_reason(err)
        if skipped:
            counts.skipped += 1
            self._log.info("{}: skipped: {}", printable(path), skipped)
        else:
            counts.failed += 1
            self._log.error("{}: {}", printable(path), failure_reason(err))
            self._log.debug("traceback", exc_info=True)

    def apply_result(self, item: Item, result: TrackResult, policy: Policy) -> list[str]:
        """Set the item's fields from ``result`` (in memory); return the changed fields
        (:func:`tagger.beetsfields.apply_result`, with this plugin's label fields)."""
        return set_fields(item, result, policy, self.state.label_fields())

    def _write_file(self, item: Item, tagger: Tagger) -> bool:
        """:meth:`PluginState.write_file`; a failure is logged. Returns whether the file
        changed."""
        from beets import config
        from tagger.tags import TagError

        try:
            return self.state.write_file(item, tagger, id3v23=config["id3v23"].get(bool))
        except (TagError, OSError) as err:
            self._log.error("{}: {}", printable(item.filepath), failure_reason(err))
            return False

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

        learn = ui.Subcommand("genreml-learn", help="learn a personal head from the items' "
                              "own genres (or moods); genreml's own values left out")
        learn.parser.usage += " [QUERY]"
        learn.parser.add_option("--task", choices=tuple(TASKS), default="genre",
                                help="genre (from genres, default) or mood (from mood)")
        learn.parser.add_option("--min-tracks", type="int", default=10, metavar="N",
                                help="tracks a label needs to be learned (default: 10)")
        learn.parser.add_option("--min-precision", type="float", default=0.7, metavar="P",
                                help="cross-validated precision a label needs to be written "
                                     "(default: 0.7)")
        learn.parser.add_option("--out", default="personal", metavar="NAME",
                                help="the head's name (default: personal)")
        learn.func = self.learn_command
        return [tag, playlist, learn]

    def tag_command(self, lib: Library, opts: optparse.Values, args: list[str]) -> None:
        """``beet genreml [-p] [-f] [-r] [--policy P] [-w|-W] [QUERY]``."""
        if opts.force and opts.policy not in (None, "force"):
            raise ui.UserError("-f/--force overwrites existing values: it cannot go with "
                               f"--policy {opts.policy}")
        policy = self.state.policy("force" if opts.force else opts.policy)
        write = self._should_write(opts.write)
        tagger = self._tagger_or_fail()
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
        if opts.genre:
            self._known_field("genre", opts.genre)
        ordered = rank_items(lib.items([*args, f"{key}:{min_prob}.."]), key, opts.genre,
                             opts.limit)
        text = format_m3u(item_entries(ordered))
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
            fields = self.state.label_fields()
        except Exception as err:
            raise ui.UserError(f"genreml: {err}") from err
        known = {lbl: field for (t, lbl), field in fields.items() if t == task}
        try:
            return known[match_label(label, known, "mood" if task == "emotion" else "genre")]
        except UnknownLabel as err:
            raise ui.UserError(str(err)) from err

    def learn_command(self, lib: Library, opts: optparse.Values, args: list[str]) -> None:
        """``beet genreml-learn [--task T] [--min-tracks N] [--min-precision P] [--out NAME]
        [QUERY]``: a personal head (:func:`tagger.learn.run.learn`) from the items' labels;
        the next command tags with it (``genreml.heads``)."""
        from tagger.learn import LearnUnavailable, require

        try:
            require()
        except LearnUnavailable as err:
            raise ui.UserError(str(err)) from err
        from tagger.learn.crossfit import LearnError
        from tagger.learn.examples import LabelSource, embeddings_of, labelled, truth_of_item
        from tagger.learn.run import learn, settings_for
        from tagger.personal import personal_dir

        tagger = self._tagger_or_fail(learning=True)
        try:
            settings = settings_for(tagger.models, opts.min_tracks, opts.min_precision)
        except ValueError as err:
            raise ui.UserError(str(err)) from err
        source = LabelSource(TASKS[opts.task])
        truths = [truth_of_item(item, source) for item in lib.items(args)]
        embeddings = embeddings_of(tagger, self._progress(labelled(truths)), self._failed)
        try:
            outcome = learn(truths, embeddings, source, settings, tagger.models,
                            personal_dir(), opts.out)
        except LearnError as err:
            raise ui.UserError(f"genreml: {err}") from err
        for line in outcome.lines:
            ui.print_(line)
        ui.print_(outcome.where)
        self._reload()

    def _reload(self) -> None:
        """Have the next command load the models (and type their fields) anew."""
        self.state.reset()
        from beets.util import cached_classproperty

        cache = getattr(cached_classproperty, "cache", None)
        if isinstance(cache, dict):  # Item._types: recomputed with the new labels' fields
            for key in [k for k in cache if isinstance(k, tuple) and k[-1] == "_types"]:
                cache.pop(key, None)

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
            tagger = self.state.tagger()
        except Exception as err:  # models or cache: say so once, never block the import
            self._import_failed = True
            self._log.error("genreml: not analysing imported items: {}", err)
            return
        policy = self.state.policy()
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
    def _progress(items: Sequence[T]) -> Iterable[T]:
        """A progress bar on stderr for more than one item, when stderr is a terminal."""
        from tqdm import tqdm

        return tqdm(items, desc="genreml", unit="item", file=sys.stderr, leave=False,
                    disable=True if len(items) <= 1 else None, dynamic_ncols=True)

