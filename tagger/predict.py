"""From an audio file to a :class:`~tagger.result.TrackResult`: clips, features, models,
aggregation."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from .audio import ClipStream
from .budget import AUTO, ClipBudget, decision_margin
from .model import ModelSet
from .result import ClipEmbeddings, HeadResult, TrackResult
from .patches import ClipGrid
from .segments import SegmentReader

log = logging.getLogger(__name__)

__all__ = ["Analyzer", "Prefetch", "aggregate", "track_result"]

T = TypeVar("T")
# Feature batches decoded ahead of inference: the decoder refills this many when the queue is
# half empty. 16 batches of 8 musicnn patches are 9 MB.
PREFETCH_BATCHES = 16


def aggregate(timeline: np.ndarray) -> np.ndarray:
    """Track-level probabilities from clip probabilities ``[n_clips, n_labels]``: the mean.

    The mean weighs every part of the piece equally, is what the trainer evaluates, and keeps a
    softmax head's output a distribution.
    """
    return timeline.mean(axis=0).astype(np.float32)


class Prefetch(Generic[T]):
    """Iterate over ``items`` computed in a background thread, up to ``depth`` ahead.

    The thread refills in bursts (from half empty to full), and :attr:`working` says whether it
    is computing right now, so the consumer can leave it a core just while it needs one. An
    exception in the thread is raised by the iteration, after the items before it.
    """

    def __init__(self, items: Iterator[T], depth: int = PREFETCH_BATCHES,
                 name: str = "genreml-prefetch") -> None:
        self._items = items
        self._depth = max(1, depth)
        self._queue: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._done = False
        self._stop = False
        self.working = True
        self._thread = threading.Thread(target=self._fill, name=name, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for item in self._items:
                with self._cond:
                    self._queue.append(item)
                    self._cond.notify_all()
                    if len(self._queue) >= self._depth:
                        self.working = False
                        self._cond.wait_for(
                            lambda: self._stop or len(self._queue) <= self._depth // 2)
                        self.working = True
                    if self._stop:
                        return
        except BaseException as err:  # handed to the consumer
            self._error = err
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
            with self._cond:
                self._done = True
                self.working = False
                self._cond.notify_all()

    def __iter__(self) -> Iterator[T]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._done)
                if self._queue:
                    item = self._queue.popleft()
                    self._cond.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield item

    def close(self) -> None:
        """Stop the thread (after the item it is computing) and wait for it."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()

    def __enter__(self) -> "Prefetch[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track_result(models: ModelSet, path: str | Path, duration: float, starts: np.ndarray,
                 embeddings: ClipEmbeddings, threshold: float | None = None,
                 max_genres: int | None = None) -> TrackResult:
    """A track's result from its clip embeddings: every head on every clip, then
    :func:`aggregate`. The one function a fresh analysis and a re-heading both end in.

    Parameters
    ----------
    models : ModelSet
    path : str or Path
    duration : float
        Seconds.
    starts : np.ndarray [shape=(n,)]
        Clip starts in seconds.
    embeddings : ClipEmbeddings
        float16 ``[n, dim]`` clip embeddings of ``models.backbone``.
    threshold, max_genres
        See :class:`Analyzer`.
    """
    timelines = models.apply_heads(embeddings.clips.astype(np.float32))
    heads = {spec.task: HeadResult(spec.task, list(spec.labels), aggregate(timelines[spec.task]),
                                   timelines[spec.task], spec.threshold, identity)
             for spec, identity in models.specs}
    return TrackResult(str(path), float(duration), np.asarray(starts, dtype=np.float64), heads,
                       threshold, max_genres, embeddings, prefer=models.preferred)


class Analyzer:
    """Analyse audio files with a :class:`~tagger.model.ModelSet`.

    A track is analysed through the clips its :class:`~tagger.budget.ClipBudget` picks on the
    clip grid, each decoded from its own segment (:mod:`tagger.segments`); ``budget=all``
    decodes the whole file in a background thread, ahead of the backbone, which then runs
    with one CPU thread fewer so the two never fight over a core. The heads run once per
    track on its clip embeddings (:func:`track_result`).

    Parameters
    ----------
    models : ModelSet
        The backbone and its heads (one per task at most).
    hop_seconds : float, optional
        Distance between clip starts on the grid; default: the clip length (no overlap).
    threshold : float, optional
        Genre decision threshold overriding the model's own.
    max_genres : int, optional
        Keep at most this many genres per track.
    budget : ClipBudget
        Which clips of a track are analysed (default: ``auto``).
    """

    def __init__(self, models: ModelSet, hop_seconds: float | None = None,
                 threshold: float | None = None, max_genres: int | None = None,
                 budget: ClipBudget = AUTO) -> None:
        self.models = models
        self.hop_seconds = hop_seconds
        self.threshold = threshold
        self.max_genres = max_genres
        self.budget = budget
        backbone = models.backbone
        self.grid = ClipGrid(backbone.sample_rate, backbone.clip_seconds, backbone.features,
                             hop_seconds, budget)

    def embed(self, clips: np.ndarray, threads: int | None = None) -> np.ndarray:
        """float16 clip embeddings ``[n, dim]`` of clips ``[n, samples]`` at the models'
        rate (rounded as the cache keeps them)."""
        return self.embed_patches(self.grid.patches(clips), threads)

    def embed_patches(self, mel: np.ndarray, threads: int | None = None) -> np.ndarray:
        """float16 clip embeddings ``[n, dim]`` of log-mel patches (rounded as the cache
        keeps them, before any head sees them)."""
        if not len(mel):
            return np.zeros((0, self.models.backbone.embedding.dim), np.float16)
        return self.models.backbone.embed(mel, threads).astype(np.float16)

    def predict_clips(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """Per-task probabilities ``[n, n_labels]`` for clips ``[n, samples]`` at the models'
        rate."""
        return self.models.apply_heads(self.embed(clips).astype(np.float32))

    def analyze(self, path: str | Path, on_clips: Callable[[int], None] | None = None,
                reader: SegmentReader | None = None) -> TrackResult:
        """Analyse one file.

        Parameters
        ----------
        path : str or Path
        on_clips : callable, optional
            Called with the number of clips after each batch the backbone ran.
        reader : SegmentReader, optional
            ``path`` already open (the fingerprint read it): not opened a second time.

        Raises
        ------
        tagger.audio.AudioError
            The file cannot be decoded or holds no usable audio.
        """
        if self.budget.clips is None:
            return self._analyze_stream(path, on_clips)
        with contextlib.nullcontext(reader) if reader is not None else SegmentReader(path) as r:
            plan = self.grid.plan(r)
            if plan is None:  # a length FFmpeg cannot tell: every clip, in one pass
                return self._analyze_stream(path, on_clips)
            starts, emb = self._embed_at(r, plan[0], on_clips)
            if not len(starts):  # every chosen clip silent: look at every clip
                return self._analyze_stream(path, on_clips)
            duration = (r.frames or 0) / r.native_rate
            more = (lambda: self._embed_at(r, plan[1], on_clips)) if len(plan[1]) else None
            return self.decide(path, duration, starts, emb, more)

    def decide(self, path: str | Path, duration: float, starts: np.ndarray, emb: np.ndarray,
               more: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> TrackResult:
        """A track's result from the embeddings of its first clips; where a decision is
        within the budget's margin of flipping, with ``more()``'s clips (starts, embeddings)
        added in start order. The one rule a local and a distributed analysis share."""
        result = self._result(path, duration, starts, emb)
        if more is not None and decision_margin(result) < self.budget.margin:
            extra_starts, extra = more()
            order = np.argsort(np.concatenate([starts, extra_starts]), kind="stable")
            starts = np.concatenate([starts, extra_starts])[order]
            emb = np.concatenate([emb, extra])[order]
            result = self._result(path, duration, starts, emb)
        return result

    def _embed_at(self, reader: SegmentReader, starts: np.ndarray,
                  on_clips: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
        """Starts (seconds) and float16 embeddings of the non-silent clips at ``starts``."""
        patches = self.grid.patches_at(reader, starts)
        emb = self.embed_patches(patches.mel)
        if on_clips and len(emb):
            on_clips(len(emb))
        return patches.starts, emb

    def _result(self, path: str | Path, duration: float, starts: np.ndarray,
                emb: np.ndarray) -> TrackResult:
        embeddings = ClipEmbeddings(self.models.backbone.identity.sha256, emb)
        return track_result(self.models, path, duration, starts, embeddings, self.threshold,
                            self.max_genres)

    def _feature_batches(self, stream: ClipStream) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in stream:
            yield batch.starts, self.grid.patches(batch.clips)

    def _analyze_stream(self, path: str | Path,
                        on_clips: Callable[[int], None] | None = None) -> TrackResult:
        """Every clip of the grid, the file decoded once from start to end."""
        backbone = self.models.backbone
        stream = self.grid.stream(path, batch_size=backbone.batch_size)
        beside = backbone.threads - 1  # threads to use while decoding runs
        parts: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        # numpy's BLAS would start threads of its own for the mel projection: keep it to one
        with threadpool_limits(limits=1, user_api="blas"), \
                Prefetch(self._feature_batches(stream)) as batches:
            for batch_starts, mel in batches:
                threads = beside if batches.working and beside >= 1 else None
                parts.append(backbone.embed(mel, threads).astype(np.float16))
                starts.append(batch_starts)
                if on_clips:
                    on_clips(len(batch_starts))
        return self._result(path, stream.duration, np.concatenate(starts),
                            np.concatenate(parts))

    def rehead(self, path: str | Path, duration: float, starts: np.ndarray,
               embeddings: ClipEmbeddings) -> TrackResult:
        """A track's result from its cached clip embeddings, without its audio. Its
        ``embedding`` is None: the cache holds it already.

        Raises
        ------
        ValueError
            The embeddings belong to another backbone.
        """
        if embeddings.backbone != self.models.backbone.identity.sha256:
            raise ValueError("embeddings of another backbone")
        result = track_result(self.models, path, duration, starts, embeddings,
                              self.threshold, self.max_genres)
        result.embedding = None
        return result
