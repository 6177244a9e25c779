"""From an audio file to a :class:`~tagger.result.TrackResult`: clips, features, models,
aggregation."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from .audio import ClipStream
from .features import FeatureSettings, log_mel
from .model import ModelSet
from .result import HeadResult, TrackResult

log = logging.getLogger(__name__)

__all__ = ["Analyzer", "aggregate", "prefetch"]

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce ``items`` in a background thread, up to ``depth`` ahead of the consumer.

    An exception in the producer is raised in the consumer; a consumer that stops early
    stops the producer at its next item.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed over to the consumer's thread
            put(err)

    worker = threading.Thread(target=produce, name="genreml-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def aggregate(timeline: np.ndarray) -> np.ndarray:
    """Track-level probabilities from clip probabilities ``[n_clips, n_labels]``: the mean.

    The mean weighs every part of the piece equally, is what the trainer evaluates, and keeps a
    softmax head's output a distribution.
    """
    return timeline.mean(axis=0).astype(np.float32)


class Analyzer:
    """Analyse audio files with a :class:`~tagger.model.ModelSet`.

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

    def features_for(self, clips: np.ndarray) -> dict[FeatureSettings, np.ndarray]:
        """Log-mel patches of clips ``[n, samples]``, once per distinct feature setting."""
        out: dict[FeatureSettings, np.ndarray] = {}
        for model in self.models.models:
            if model.features not in out:
                out[model.features] = log_mel(clips, model.sample_rate, model.features)
        return out

    def run_models(self, features: dict[FeatureSettings, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-task probabilities ``[n, n_labels]`` from :meth:`features_for`'s patches."""
        out: dict[str, np.ndarray] = {}
        for model in self.models.models:
            out.update(model.run(features[model.features]))
        return out

    def predict_clips(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """Per-task probabilities ``[n, n_labels]`` for clips ``[n, samples]`` at the models'
        rate."""
        return self.run_models(self.features_for(clips))

    def analyze(self, path: str | Path,
                on_clips: Callable[[int], None] | None = None) -> TrackResult:
        """Analyse one file.

        Decoding and features of the next clips run in a background thread while the models
        run on the current ones (both spend their time in native code that releases the GIL).

        Raises
        ------
        tagger.audio.AudioError
            The file cannot be decoded or holds no usable audio.
        """
        stream = ClipStream(path, self.models.sample_rate, self.models.clip_seconds,
                            self.hop_seconds, batch_size=16)
        parts: dict[str, list[np.ndarray]] = {}
        starts: list[np.ndarray] = []
        for batch, features in prefetch((b, self.features_for(b.clips)) for b in stream):
            for task, probs in self.run_models(features).items():
                parts.setdefault(task, []).append(probs)
            starts.append(batch.starts)
            if on_clips:
                on_clips(len(batch.clips))
        heads = {}
        for model in self.models.models:
            for head in model.heads:
                timeline = np.concatenate(parts[head.task])
                heads[head.task] = HeadResult(head.task, list(head.labels), aggregate(timeline),
                                              timeline, head.threshold, model.identity)
        return TrackResult(str(path), stream.duration, np.concatenate(starts), heads,
                           self.threshold, self.max_genres)
