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
from .features import FeatureSettings, log_mel
from .model import ModelSet
from .result import HeadResult, TrackResult

log = logging.getLogger(__name__)

__all__ = ["Analyzer", "Prefetch", "aggregate"]

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


class Analyzer:
    """Analyse audio files with a :class:`~tagger.model.ModelSet`.

    Decoding, resampling and features run in a background thread, ahead of inference. While
    that thread computes, inference runs with one CPU thread fewer, so the two never fight
    over a core; when it waits (queue full) or is done, inference takes every core.

    Parameters
    ----------
    models : ModelSet
        Loaded models (one per task at most).
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

    def features(self, clips: np.ndarray) -> dict[FeatureSettings, np.ndarray]:
        """Log-mel patches of clips ``[n, samples]``, once per distinct feature setting."""
        out: dict[FeatureSettings, np.ndarray] = {}
        for model in self.models.models:
            if model.features not in out:
                out[model.features] = log_mel(clips, model.sample_rate, model.features)
        return out

    def run_models(self, features: dict[FeatureSettings, np.ndarray],
                   threads: int | None = None) -> dict[str, np.ndarray]:
        """Per-task probabilities ``[n, n_labels]`` from :meth:`features`' output."""
        out: dict[str, np.ndarray] = {}
        for model in self.models.models:
            out.update(model.run(features[model.features], threads))
        return out

    def predict_clips(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """Per-task probabilities ``[n, n_labels]`` for clips ``[n, samples]`` at the models'
        rate."""
        return self.run_models(self.features(clips))

    def _feature_batches(self, stream: ClipStream) -> Iterator[tuple[np.ndarray, dict]]:
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
        models = self.models.models
        stream = ClipStream(path, self.models.sample_rate, self.models.clip_seconds,
                            self.hop_seconds, batch_size=models[0].batch_size)
        beside = max(m.threads for m in models) - 1  # threads to use while decoding runs
        parts: dict[str, list[np.ndarray]] = {}
        starts: list[np.ndarray] = []
        # numpy's BLAS would start threads of its own for the mel projection: keep it to one
        with threadpool_limits(limits=1, user_api="blas"), \
                Prefetch(self._feature_batches(stream)) as batches:
            for batch_starts, features in batches:
                threads = beside if batches.working and beside >= 1 else None
                for task, probs in self.run_models(features, threads).items():
                    parts.setdefault(task, []).append(probs)
                starts.append(batch_starts)
                if on_clips:
                    on_clips(len(batch_starts))
        heads = {}
        for model in models:
            for head in model.heads:
                timeline = np.concatenate(parts[head.task])
                heads[head.task] = HeadResult(head.task, list(head.labels), aggregate(timeline),
                                              timeline, head.threshold, model.identity)
        return TrackResult(str(path), stream.duration, np.concatenate(starts), heads,
                           self.threshold, self.max_genres)
