"""The road every front door walks: cache first, analyse what is new, write tags, remember.

The CLI (``genreml tag``), the beets plugin and the watch daemon all call :class:`Tagger`, so a
file is analysed once whoever sees it first.

A file genreml tagged before holds genreml's values, not the user's: when a new analysis (a new
model version, ``--stale-only``, ``--force``) replaces the result genreml wrote, the values that
result decided are taken out of the file's values before the policy weighs them
(:func:`tagger.tags.own_values_removed`). The new result replaces the old one in the cache only
once the file holds it, so a dry run or a failed write leaves that knowledge in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .audio import AudioError
from .budget import AUTO, ClipBudget
from .cache import Cache
from .fingerprint import fingerprint_of
from .model import ModelSet
from .predict import Analyzer
from .result import TrackResult
from .segments import SegmentReader
from .tags import (V23_SEP, FileChanged, FileTags, Policy, TagPlan, cleanup_stale_temp,
                   write_tags)

log = logging.getLogger(__name__)

__all__ = ["Outcome", "Tagger"]

# A file replaced while it is analysed is analysed again, this many times at most.
MAX_ATTEMPTS = 3


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must not change between the start of an analysis and its use."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclasses.dataclass(frozen=True)
class WriteSettings:
    """How a result is written into its file: the policy, the ID3v2.3 separator, and whether
    a file whose owner, mode or attributes could not be kept is refused."""

    policy: Policy
    v23_sep: str = V23_SEP
    safe_only: bool = False

    def write(self, path: str | Path, result: TrackResult, expected: os.stat_result | None,
              own: FileTags | None, dry_run: bool = False) -> TagPlan:
        """Plan and (unless ``dry_run``) write ``result``'s decision into the file
        (:func:`tagger.tags.write_tags`), where a :class:`Tagger` or a Ray worker runs."""
        mood = result.emotion[0] if result.emotion else None
        return write_tags(path, [g for g, _ in result.genres], mood, self.policy,
                          dry_run=dry_run, v23_sep=self.v23_sep, expected=expected,
                          safe_only=self.safe_only, own=own)


@dataclasses.dataclass(frozen=True)
class Analysed:
    """A file's analysis made elsewhere (a Ray worker, :mod:`tagger.raydata`): used in place of
    analysing here while the file keeps the size and mtime it had when it was read."""

    result: TrackResult
    fingerprint: str | None
    size: int
    mtime_ns: int

    def describes(self, st: os.stat_result) -> bool:
        # dev and inode are not compared: a worker may see the file through another mount
        return (st.st_size, st.st_mtime_ns) == (self.size, self.mtime_ns)


@dataclasses.dataclass
class Outcome:
    """What happened to one file.

    ``source`` is where the result came from: ``cache`` (file unchanged), ``moved`` (found by
    its audio fingerprint after a rename or move), ``reheaded`` (new heads applied to the
    cached embeddings of the unchanged file, no decoding) or ``analysed``. ``plan`` is the tag change
    (None when tags were not written).
    """

    path: Path
    result: TrackResult
    source: str
    plan: TagPlan | None = None
    settled: bool = False  # unchanged since it last held what these settings ask: not opened

    @property
    def changed(self) -> bool | None:
        """Whether the tags changed (or would, in a dry run); None when not writing."""
        if self.settled:
            return False
        return None if self.plan is None else self.plan.changed

    @property
    def status(self) -> str:
        """``tagged`` (tags changed, or would in a dry run), ``unchanged``, or when not
        writing ``analysed``, ``reheaded`` or ``cached``."""
        changed = self.changed
        if changed is None:
            return self.source if self.source in ("analysed", "reheaded") else "cached"
        return "tagged" if changed else "unchanged"


@dataclasses.dataclass
class _Analysis:
    """A file's result as :meth:`Tagger._analyse` found it, with the stat it belongs to."""

    result: TrackResult
    source: str
    stat: os.stat_result
    fingerprint: str | None = None
    own: FileTags | None = None  # what genreml's previous result put in the file
    stored: bool = True  # False: to be cached once the file holds it


def _settle_key(models: ModelSet, policy: Policy, threshold: float | None,
                max_genres: int | None, v23_sep: str, safe_only: bool) -> str:
    """A digest of everything that decides what a tag run writes into a file."""
    parts = [sorted(i.id for i in models.identities.values()), policy.genre, policy.mood,
             threshold, max_genres, v23_sep, safe_only]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


class Tagger:
    """Analyse (through the cache) and tag files.

    Parameters
    ----------
    models : ModelSet
        The models; their identities key the cache.
    cache : Cache
        The results cache.
    policy : str or Policy
        Tag policy: ``fill`` (default), ``merge`` or ``force``, or a per-field :class:`Policy`.
    write : bool
        Write tags into the files (else only analyse and cache).
    dry_run : bool
        Plan tag changes without writing them.
    hop_seconds, threshold, max_genres, budget
        See :class:`~tagger.predict.Analyzer`.
    v23_sep : str
        Separator of several genres in an ID3v2.3 tag (see :func:`tagger.tags.write_tags`).
    safe_only : bool
        Refuse to write where the file's owner, mode, xattrs or ACLs could not be carried
        over exactly (see :func:`tagger.tags.write_tags`).
    trust_settled : bool
        Leave a file unopened when its size and mtime are those genreml recorded after it last
        left the file holding what the same settings ask (a re-run over an unchanged library
        reads no file). False re-reads every file's tags (``tag --print`` shows them).
    """

    def __init__(self, models: ModelSet, cache: Cache, policy: str | Policy = "fill",
                 write: bool = True, dry_run: bool = False, hop_seconds: float | None = None,
                 threshold: float | None = None, max_genres: int | None = None, *,
                 v23_sep: str = V23_SEP, safe_only: bool = False,
                 trust_settled: bool = True, budget: ClipBudget = AUTO) -> None:
        self.analyzer = Analyzer(models, hop_seconds, threshold, max_genres, budget)
        self.models = models
        self.cache = cache
        self.policy = Policy.of(policy)
        self.write = write
        self.dry_run = dry_run
        self.writing = WriteSettings(self.policy, v23_sep, safe_only)
        self.trust_settled = trust_settled
        self.settle_key = _settle_key(models, self.policy, threshold, max_genres, v23_sep,
                                      safe_only)
        self.counts: Counter[str] = Counter()
        self._cleaned: set[str] = set()  # folders whose stale temporary copies were removed
        self._lock = threading.Lock()

    @property
    def identities(self):
        return self.models.identities

    def answers(self, path: str | Path) -> bool:
        """Whether the cache answers ``path`` as it is now without decoding it: a result of
        these models, or embeddings of this backbone that the heads can re-tag."""
        st = os.stat(path)
        return (self.cache.lookup(path, self.identities, stat=st) is not None
                or self.cache.embedding(path, self.models.backbone.identity.sha256, st)
                is not None)

    def mark_stale(self) -> int:
        """Mark results of other model versions stale; returns how many."""
        return self.cache.mark_stale(self.identities)

    def result_for(self, path: str | Path, reanalyse: bool = False,
                   analysed: Analysed | None = None) -> tuple[TrackResult, str]:
        """The file's result and its source (``cache``, ``moved``, ``reheaded`` or
        ``analysed``); ``analysed``: an analysis made elsewhere, used if the file is as it
        was then.

        Raises
        ------
        tagger.audio.AudioError, OSError
        """
        found = self._analyse(Path(path), reanalyse, analysed=analysed)
        return found.result, found.source

    def _analyse(self, path: Path, reanalyse: bool, defer: bool = False,
                 analysed: Analysed | None = None) -> _Analysis:
        """:meth:`result_for`, with the stat the result belongs to.

        A result is only used (and cached) for the file it was computed from: when the file
        is replaced or rewritten while it is fingerprinted or analysed, it is analysed again.

        Parameters
        ----------
        path : Path
        reanalyse : bool
            Analyse even when the cache has a result.
        defer : bool
            The caller writes the result into the file: a new result replacing one genreml
            wrote there is not cached yet (``stored`` False, ``own`` set), so that until the
            file holds it the cache still knows which of its values are genreml's.
        """
        for _ in range(MAX_ATTEMPTS):
            st = os.stat(path)
            result, source, fp = None, "analysed", None
            if not reanalyse:
                result = self.cache.lookup(path, self.identities, stat=st)
                source = "cache"
            if result is None and not reanalyse:  # a new head: from the stored embeddings
                stored = self.cache.embedding(path, self.models.backbone.identity.sha256, st)
                if stored is not None:
                    result = self.analyzer.rehead(path, *stored[:3])
                    source, fp = "reheaded", stored.fingerprint
            if result is None and analysed is not None and analysed.describes(st):
                result, source, fp = analysed.result, "analysed", analysed.fingerprint
                analysed = None  # once: if the file changes now, it is analysed here
            if result is None:  # one open file for the fingerprint and the clips
                with SegmentReader(path) as reader:
                    fp = fingerprint_of(reader)
                    if not reanalyse and self._unchanged(path, st):
                        result = self.cache.lookup_fingerprint(fp, self.identities, path=path)
                        source = "moved"
                    if result is None:
                        result = self.analyzer.analyze(path, reader=reader)
                        source = "analysed"
            if not self._unchanged(path, st):
                log.info("%s changed while it was analysed: analysing it again", path)
                continue
            found = _Analysis(result, source, st, fp)
            if source in ("analysed", "reheaded"):
                # before store() replaces the previous result (and resets "tagged")
                found.own = self.own_values(path, result.heads) if defer else None
                found.stored = found.own is None
                if found.stored:
                    self.cache.store(result, fp, st)
            result.path = str(path)
            result.threshold = self.analyzer.threshold
            result.max_genres = self.analyzer.max_genres
            result.prefer = self.models.preferred
            return found
        raise AudioError(f"file keeps changing ({MAX_ATTEMPTS} analyses were overtaken)")

    def own_values(self, path: str | Path, tasks: Iterable[str]) -> FileTags | None:
        """The genres and mood genreml's previous result decided for ``path``, in the tasks
        a new result replaces; None unless genreml wrote that result into the file."""
        previous = self.cache.tagged_result(path)
        if previous is None:
            return None
        # decided as tag() decided them: decide_genres with the stored threshold (or this
        # Tagger's override) and this Tagger's max_genres; the mood is the argmax
        previous.threshold = self.analyzer.threshold
        previous.max_genres = self.analyzer.max_genres
        previous.prefer = self.models.preferred
        tasks = set(tasks)
        genres = [g for g, _ in previous.genres] if "genre" in tasks else []
        emotion = previous.emotion if "emotion" in tasks else None
        mood = emotion[0] if emotion else None
        return FileTags(genres, mood) if genres or mood is not None else None

    def _written(self, path: Path, plan: TagPlan) -> dict:
        """What genreml's writes leave in the file after ``plan`` (:meth:`TagPlan.ours_with`
        the cache's earlier record), as :meth:`tagger.cache.Cache.update_stat` records it."""
        before = next(iter(self.cache.written([path]).values()), {})
        earlier = FileTags(list(before.get("genres") or []), before.get("mood"))
        ours = plan.ours_with(earlier)
        return {"genres": ours.genres, "mood": ours.mood}

    @staticmethod
    def _unchanged(path: Path, st: os.stat_result) -> bool:
        try:
            return _identity(os.stat(path)) == _identity(st)
        except FileNotFoundError:
            return False

    def _clean_folder(self, path: Path) -> None:
        """Remove temporary copies a killed writer left next to ``path`` (once per folder)."""
        folder = os.path.dirname(os.path.abspath(path))
        with self._lock:  # files of one folder may be tagged in two threads at once
            if folder in self._cleaned:
                return
            self._cleaned.add(folder)
        try:
            removed = cleanup_stale_temp(folder)
        except OSError as err:  # a folder we cannot list: tagging goes on
            log.warning("cannot clean temporary files in %s: %s", folder, err)
            return
        if removed:
            log.info("removed %d stale temporary file(s) in %s", len(removed), folder)

    def tag(self, path: str | Path, reanalyse: bool = False,
            analysed: Analysed | None = None) -> Outcome:
        """Analyse ``path`` through the cache (or take ``analysed``, see :meth:`result_for`)
        and write its tags under the policy.

        A result is written only into the file it was computed from: a file replaced or
        rewritten since its analysis began is analysed again (at most :data:`MAX_ATTEMPTS`
        times, then ``AudioError("file keeps changing ...")``).

        Raises
        ------
        tagger.audio.AudioError, tagger.tags.TagError, OSError
            The file cannot be analysed or tagged; nothing in it was changed.
        """
        path = Path(path)
        if self.write and not self.dry_run:
            self._clean_folder(path)
        for attempt in range(MAX_ATTEMPTS):
            found = self._analyse(path, reanalyse, defer=self.write, analysed=analysed)
            analysed = None
            result, source = found.result, found.source
            outcome = Outcome(path, result, source)
            if not self.write:
                break
            if (self.trust_settled and not self.dry_run and source == "cache"
                    and result.settled == self.settle_key):
                outcome.settled = True
                break
            try:
                outcome.plan = self.writing.write(path, result, found.stat, found.own,
                                                  self.dry_run)
            except FileChanged:
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                log.info("%s changed before its tags were written: analysing it again", path)
                continue
            if not self.dry_run:
                self._record(path, found, outcome.plan)
            break
        return self._count(outcome)

    def written_elsewhere(self, path: str | Path, analysed: Analysed, plan: TagPlan
                          ) -> Outcome:
        """Record a result that a Ray worker wrote into the file itself (with ``plan``, made
        with :meth:`own_values` and :attr:`writing`), as :meth:`tag` records its own."""
        path = Path(path)
        found = _Analysis(analysed.result, "analysed", os.stat(path), analysed.fingerprint,
                          plan.own, stored=False)
        found.result.path = str(path)
        self._record(path, found, plan)
        return self._count(Outcome(path, found.result, "analysed", plan))

    def _record(self, path: Path, found: _Analysis, plan: TagPlan) -> None:
        """The cache after ``plan`` was carried out on the file."""
        if not found.stored:  # the file holds the new result: it replaces the old
            self.cache.store(found.result, found.fingerprint, found.stat)
        # our own write must not look like a new file; then the file holds what these
        # settings ask, with the stat it had when planned if nothing was written
        changed = plan.changed
        self.cache.update_stat(path, None if changed else found.stat,
                               tagged=changed or plan.holds_own, settled=self.settle_key,
                               written=self._written(path, plan))

    def _count(self, outcome: Outcome) -> Outcome:
        with self._lock:
            self.counts[outcome.status] += 1
            self.counts[outcome.source] += 1
        return outcome
