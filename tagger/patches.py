"""The decoding half of an analysis: which clips of a track, decoded into log-mel patches.

Nothing here runs a model. :class:`ClipGrid` holds what decoding needs of the models (rate,
clip length, features) and of the run (hop, clip budget). The local
:class:`tagger.predict.Analyzer` decodes through it clip batch by clip batch, next to the
backbone; a distributed run (:mod:`tagger.raydata`) calls :func:`decode_track` in CPU tasks
and sends the patches to the processes that hold the models. Both pick the same clips and
compute the same patches.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .audio import SILENCE_PEAK, ClipStream
from .budget import AUTO, ClipBudget, grid_indices
from .features import FeatureSettings, log_mel
from .segments import SegmentReader, clip_count, read_clips

__all__ = ["ClipGrid", "Patches", "TrackPatches", "decode_track"]


@dataclasses.dataclass(frozen=True)
class ClipGrid:
    """Where a track's clips start, how many are analysed, and how they become patches.

    Parameters
    ----------
    sample_rate, clip_seconds, features
        The backbone's (:class:`tagger.model.Backbone`).
    hop_seconds : float, optional
        Distance between clip starts; default: the clip length.
    budget : ClipBudget
        Which clips are analysed (:mod:`tagger.budget`).
    """

    sample_rate: int
    clip_seconds: float
    features: FeatureSettings
    hop_seconds: float | None = None
    budget: ClipBudget = AUTO

    @property
    def hop(self) -> float:
        return self.hop_seconds or self.clip_seconds

    def plan(self, reader: SegmentReader) -> tuple[np.ndarray, np.ndarray] | None:
        """Starts (seconds) of the clips analysed first, and of those added where a decision
        is close (empty when the budget never widens); None: analyse every clip in one pass
        (``--clips all``, or a length the decoder cannot tell)."""
        if self.budget.clips is None:
            return None
        n = clip_count(reader, self.sample_rate, self.clip_seconds, self.hop)
        if n is None:
            return None
        chosen = grid_indices(n, self.budget.clips)
        more = np.zeros(0, np.int64)
        if self.budget.widen and n > len(chosen):
            more = np.setdiff1d(grid_indices(n, self.budget.widen), chosen)
        return chosen * self.hop, more * self.hop

    def patches(self, clips: np.ndarray) -> np.ndarray:
        """Log-mel patches ``[n, n_frames, n_mels]`` of clips ``[n, samples]``."""
        with threadpool_limits(limits=1, user_api="blas"):  # numpy's mel projection
            return log_mel(clips, self.sample_rate, self.features)

    def patches_at(self, reader: SegmentReader, starts: np.ndarray) -> Patches:
        """The non-silent clips at ``starts`` (seconds), as patches."""
        batch = read_clips(reader, self.sample_rate, self.clip_seconds, starts)
        keep = np.abs(batch.clips).max(axis=1) >= SILENCE_PEAK if len(batch.clips) else []
        clips, kept = batch.clips[keep], batch.starts[keep]
        if not len(clips):
            return Patches(np.zeros(0), np.zeros((0, self.features.n_frames,
                                                  self.features.n_mels), np.float32))
        return Patches(kept, self.patches(clips))

    def stream(self, path: str | os.PathLike[str], batch_size: int = 8) -> ClipStream:
        """Every clip of the grid, decoded in one pass (:class:`tagger.audio.ClipStream`)."""
        return ClipStream(path, self.sample_rate, self.clip_seconds, self.hop_seconds,
                          batch_size=batch_size)


@dataclasses.dataclass
class Patches:
    """Clip starts (seconds) and their log-mel patches ``[n, n_frames, n_mels]``."""

    starts: np.ndarray
    mel: np.ndarray


@dataclasses.dataclass
class TrackPatches:
    """A whole track decoded for the backbone: the clips analysed first, and those added
    where a decision is close (``more``; None when there are none)."""

    path: str
    duration: float
    first: Patches
    more: Patches | None
    fingerprint: str | None = None
    stat: os.stat_result | None = None


def decode_track(path: str | Path, grid: ClipGrid) -> TrackPatches:
    """Decode the clips :meth:`ClipGrid.plan` picks (all of them, also where every picked clip
    is silent, as :meth:`tagger.predict.Analyzer.analyze` does), with the file's fingerprint
    and its stat from before it was read.

    Raises
    ------
    tagger.audio.AudioError, OSError
        The file cannot be decoded or holds no usable audio.
    """
    from .fingerprint import fingerprint_of

    st = os.stat(path)
    with SegmentReader(path) as reader:
        fingerprint = fingerprint_of(reader)
        plan = grid.plan(reader)
        if plan is not None:
            first = grid.patches_at(reader, plan[0])
            if len(first.starts):
                more = grid.patches_at(reader, plan[1]) if len(plan[1]) else None
                duration = (reader.frames or 0) / reader.native_rate
                return TrackPatches(str(path), duration, first, more, fingerprint, st)
    stream = grid.stream(path)
    parts = [(batch.starts, grid.patches(batch.clips)) for batch in stream]  # or SilentAudio
    first = Patches(np.concatenate([s for s, _ in parts]), np.concatenate([m for _, m in parts]))
    return TrackPatches(str(path), stream.duration, first, None, fingerprint, st)
