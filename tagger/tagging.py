"""The road every front door walks: cache first, analyse what is new, write tags, remember.

The CLI (``genreml tag``), the beets plugin and the watch daemon all call :class:`Tagger`, so a
file is analysed once whoever sees it first.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from pathlib import Path

from .audio import fingerprint
from .cache import Cache
from .model import ModelSet
from .predict import Analyzer
from .result import TrackResult
from .tags import Policy, TagPlan, write_tags

log = logging.getLogger(__name__)

__all__ = ["Outcome", "Tagger"]

SOURCES = ("cache", "moved", "analysed")


@dataclasses.dataclass
class Outcome:
    """What happened to one file.

    ``source`` is where the result came from: ``cache`` (file unchanged), ``moved`` (found by
    its audio fingerprint after a rename or move) or ``analysed``. ``plan`` is the tag change
    (None when tags were not written).
    """

    path: Path
    result: TrackResult
    source: str
    plan: TagPlan | None = None

    @property
    def status(self) -> str:
        """``tagged`` (tags changed, or would in a dry run), ``unchanged`` or ``analysed``
        (when not writing)."""
        if self.plan is None:
            return "cached" if self.source != "analysed" else "analysed"
        return "tagged" if self.plan.changed else "unchanged"


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
    hop_seconds, threshold, max_genres
        See :class:`~tagger.predict.Analyzer`.
    """

    def __init__(self, models: ModelSet, cache: Cache, policy: str | Policy = "fill",
                 write: bool = True, dry_run: bool = False, hop_seconds: float | None = None,
                 threshold: float | None = None, max_genres: int | None = None) -> None:
        self.analyzer = Analyzer(models, hop_seconds, threshold, max_genres)
        self.models = models
        self.cache = cache
        self.policy = Policy.of(policy)
        self.write = write
        self.dry_run = dry_run
        self.counts: Counter[str] = Counter()

    @property
    def identities(self):
        return self.models.identities

    def mark_stale(self) -> int:
        """Mark results of other model versions stale; returns how many."""
        return self.cache.mark_stale(self.identities)

    def result_for(self, path: str | Path, reanalyse: bool = False) -> tuple[TrackResult, str]:
        """The file's result and its source (``cache``, ``moved`` or ``analysed``).

        Raises
        ------
        tagger.audio.AudioError, OSError
        """
        path = Path(path)
        st = os.stat(path)
        result, source = None, "analysed"
        if not reanalyse:
            result = self.cache.lookup(path, self.identities, stat=st)
            source = "cache"
        fp = None
        if result is None:
            fp = fingerprint(path)
            if not reanalyse:
                result = self.cache.lookup_fingerprint(fp, self.identities, path=path)
                source = "moved"
        if result is None:
            result = self.analyzer.analyze(path)
            source = "analysed"
            self.cache.store(result, fp, st)
        result.path = str(path)
        result.threshold = self.analyzer.threshold
        result.max_genres = self.analyzer.max_genres
        return result, source

    def tag(self, path: str | Path, reanalyse: bool = False) -> Outcome:
        """Analyse ``path`` through the cache and write its tags under the policy.

        Raises
        ------
        tagger.audio.AudioError, tagger.tags.TagError, OSError
            The file cannot be analysed or tagged; nothing in it was changed.
        """
        result, source = self.result_for(path, reanalyse)
        outcome = Outcome(Path(path), result, source)
        if self.write:
            mood = result.emotion[0] if result.emotion else None
            outcome.plan = write_tags(path, [g for g, _ in result.genres], mood, self.policy,
                                      dry_run=self.dry_run)
            if outcome.plan.changed and not self.dry_run:
                self.cache.update_stat(path)  # our own write must not look like a new file
        self.counts[outcome.status] += 1
        self.counts[source] += 1
        return outcome
