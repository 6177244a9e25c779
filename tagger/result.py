"""What the analysis of one track produces: per-head probabilities and the clip timeline."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["DEFAULT_GENRE_THRESHOLD", "ClipEmbeddings", "HeadResult", "ModelIdentity", "TrackResult",
           "check_threshold", "decide_emotion", "decide_genres"]


DEFAULT_GENRE_THRESHOLD = 0.2  # a genre is tagged when its probability is >= this


def check_threshold(threshold: float | None, name: str = "threshold",
                    error: type[Exception] = ValueError) -> float | None:
    """``threshold`` if it is None (the model's own) or strictly between 0 and 1.

    The one check every front door makes of a user's genre threshold (0 would tag every
    genre, 1 none).

    Parameters
    ----------
    threshold : float or None
        As the user gave it.
    name : str
        How the user gave it (``"--threshold"``, ``"genreml.threshold"``), for the message.
    error : type of Exception
        What the front door raises for a usage error.

    Raises
    ------
    error
        ``"<name> must be between 0 and 1"``.
    """
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise error(f"{name} must be between 0 and 1")
    return threshold


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """Which model file produced a result: a new file or version makes old results stale."""

    name: str
    version: str
    sha256: str

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}:{self.sha256[:12]}"


@dataclasses.dataclass
class HeadResult:
    """One model output (a task) for one track.

    ``timeline`` is the per-clip probability matrix ``[n_clips, n_labels]`` (float32) and
    ``probs`` its aggregate over clips (the mean: every clip counts the same, so a track's tag
    reflects the whole piece rather than its loudest moment).
    """

    task: str  # "genre" | "emotion"
    labels: list[str]
    probs: np.ndarray
    timeline: np.ndarray
    threshold: float | None
    model: ModelIdentity

    def prob_dict(self) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, self.probs)}


def decide_genres(
    labels: list[str], probs: np.ndarray, threshold: float, max_genres: int | None = None,
    prefer: tuple[str, ...] = (),
) -> list[tuple[str, float]]:
    """Every label with ``prob >= threshold``, most probable first, at most ``max_genres``;
    labels in ``prefer`` (the user's personal labels) come before the others."""
    probs = np.asarray(probs)
    first = np.isin(np.asarray(labels, dtype=object), list(prefer)) if prefer else \
        np.zeros(len(labels), bool)
    order = np.lexsort((-probs, ~first))  # stable: ties keep the labels' order
    chosen = [(labels[i], float(probs[i])) for i in order if probs[i] >= threshold]
    return chosen[:max_genres] if max_genres else chosen


def decide_emotion(labels: list[str], probs: np.ndarray) -> tuple[str, float]:
    """The label with the highest mean probability."""
    i = int(np.argmax(probs))
    return labels[i], float(probs[i])


@dataclasses.dataclass
class ClipEmbeddings:
    """The backbone's clip embeddings of one track, as the heads saw them.

    ``clips`` is float16 ``[n_clips, dim]``: the analysis rounds the backbone's output to
    float16 before any head runs, so heads applied later to the cached copy give exactly what
    a fresh analysis gives. Track-level probabilities are the mean over clips of each head's
    clip probabilities (:func:`tagger.predict.aggregate`), which needs the clips, not only
    their mean; :attr:`pooled` (the clip mean, float16) is what personal heads learn from.
    """

    backbone: str  # the backbone file's sha256
    clips: np.ndarray

    @property
    def pooled(self) -> np.ndarray:
        return self.clips.astype(np.float32).mean(axis=0).astype(np.float16)


@dataclasses.dataclass
class TrackResult:
    """Everything known about one analysed track."""

    path: str
    duration: float
    clip_starts: np.ndarray  # seconds, one per analysed clip
    heads: dict[str, HeadResult]  # by task
    threshold: float | None = None  # overrides the genre model's own threshold
    max_genres: int | None = None
    embedding: ClipEmbeddings | None = None  # set by an analysis, for the cache
    # from the cache: the tag settings the file last settled under (tagger.tagging.Tagger)
    settled: str | None = None
    prefer: tuple[str, ...] = ()  # genres decided before the others (personal labels)

    @property
    def clips(self) -> int:
        return int(len(self.clip_starts))

    @property
    def genres(self) -> list[tuple[str, float]]:
        head = self.heads.get("genre")
        if head is None:
            return []
        threshold = self.threshold if self.threshold is not None else head.threshold
        if threshold is None:
            threshold = DEFAULT_GENRE_THRESHOLD
        return decide_genres(head.labels, head.probs, threshold, self.max_genres, self.prefer)

    @property
    def emotion(self) -> tuple[str, float] | None:
        head = self.heads.get("emotion")
        return None if head is None else decide_emotion(head.labels, head.probs)

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        """JSON-ready view (``genreml analyze --json``)."""
        genre = self.heads.get("genre")
        emotion = self.heads.get("emotion")
        out: dict[str, Any] = {
            "path": self.path,
            "genres": [{"label": l, "prob": round(p, 4)} for l, p in self.genres],
            "genre_probs": {k: round(v, 4) for k, v in genre.prob_dict().items()} if genre else {},
            "emotion": (
                {"label": self.emotion[0], "prob": round(self.emotion[1], 4)} if emotion else None
            ),
            "emotion_probs": (
                {k: round(v, 4) for k, v in emotion.prob_dict().items()} if emotion else {}
            ),
            "clips": self.clips,
            "duration": round(self.duration, 3),
            "models": {task: h.model.id for task, h in self.heads.items()},
        }
        if timeline:
            out["timeline"] = {
                "clip_starts": [round(float(s), 3) for s in self.clip_starts],
                **{task: np.round(h.timeline.astype(float), 4).tolist()
                   for task, h in self.heads.items()},
            }
        return out
