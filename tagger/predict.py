"""From an audio file to a :class:`~tagger.result.TrackResult`: clips, features, models,
aggregation."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from .audio import ClipStream
from .features import log_mel
from .model import ModelSet
from .result import ClipEmbeddings, HeadResult, TrackResult

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
                       threshold, max_genres, embeddings)


class Analyzer:
    """Analyse audio files with a :class:`~tagger.model.ModelSet`.

    Decoding, resampling and features run in a background thread, ahead of the backbone.
    While that thread computes, the backbone runs with one CPU thread fewer, so the two never
    fight over a core; when it waits (queue full) or is done, the backbone takes every core.
    The heads run once per track on its clip embeddings (:func:`track_result`).

    Parameters
    ----------
    models : ModelSet
        The backbone and its heads (one per task at most).
    hop_seconds : float, optional
        Distance between clip starts; default: the clip length (no overlap).
    threshold : float, optional
        Genre decision threshold overriding the model's own.
    max_genres : int, optional
        Keep at most this many genres per track.
    """

    def __init__(self, models: ModelSet, hop_seconds: float | None = None,
                 threshold: float | None = None, max_genres: int | None = None) -> None:
        self.models = models
        self.hop_seconds = hop_seconds
        self.threshold = threshold
        self.max_genres = max_genres

    def features(self, clips: np.ndarray) -> np.ndarray:
        """Log-mel patches ``[n, n_frames, n_mels]`` of clips ``[n, samples]``."""
        return log_mel(clips, self.models.sample_rate, self.models.backbone.features)

    def embed(self, clips: np.ndarray, threads: int | None = None) -> np.ndarray:
        """float16 clip embeddings ``[n, dim]`` of clips ``[n, samples]`` at the models'
        rate (rounded as the cache keeps them)."""
        return self.models.backbone.embed(self.features(clips), threads).astype(np.float16)

    def predict_clips(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """Per-task probabilities ``[n, n_labels]`` for clips ``[n, samples]`` at the models'
        rate."""
        return self.models.apply_heads(self.embed(clips).astype(np.float32))

    def _feature_batches(self, stream: ClipStream) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in stream:
            yield batch.starts, self.features(batch.clips)

    def analyze(self, path: str | Path,
                on_clips: Callable[[int], None] | None = None) -> TrackResult:
        """Analyse one file.

        Raises
        ------
        tagger.audio.AudioError
            The file cannot be decoded or holds no usable audio.
        """
        backbone = self.models.backbone
        stream = ClipStream(path, self.models.sample_rate, self.models.clip_seconds,
                            self.hop_seconds, batch_size=backbone.batch_size)
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
        embeddings = ClipEmbeddings(backbone.identity.sha256, np.concatenate(parts))
        return track_result(self.models, path, stream.duration, np.concatenate(starts),
                            embeddings, self.threshold, self.max_genres)

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
