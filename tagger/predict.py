"""From an audio file to a :class:`~tagger.result.TrackResult`: clips, features, models,
aggregation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .audio import ClipStream
from .features import FeatureSettings, log_mel
from .model import ModelSet
from .result import HeadResult, TrackResult

log = logging.getLogger(__name__)

__all__ = ["Analyzer", "aggregate"]


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

    def predict_clips(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """Per-task probabilities ``[n, n_labels]`` for clips ``[n, samples]`` at the models'
        rate; features are computed once per distinct feature setting."""
        features: dict[FeatureSettings, np.ndarray] = {}
        out: dict[str, np.ndarray] = {}
        for model in self.models.models:
            if model.features not in features:
                features[model.features] = log_mel(clips, model.sample_rate, model.features)
            out.update(model.run(features[model.features]))
        return out

    def analyze(self, path: str | Path,
                on_clips: Callable[[int], None] | None = None) -> TrackResult:
        """Analyse one file.

        Raises
        ------
        tagger.audio.AudioError
            The file cannot be decoded or holds no usable audio.
        """
        stream = ClipStream(path, self.models.sample_rate, self.models.clip_seconds,
                            self.hop_seconds, batch_size=64)
        parts: dict[str, list[np.ndarray]] = {}
        starts: list[np.ndarray] = []
        for batch in stream:
            for task, probs in self.predict_clips(batch.clips).items():
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
