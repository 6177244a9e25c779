"""Cross-validation by artist, operating points, and the head that is kept (scikit-learn).

A head is a standardisation and a logistic regression on the backbone's clip embeddings: one
sigmoid per genre, or one softmax over the moods. It is fitted on each track's mean clip
embedding and, as at run time, applied to every clip, the track's probability being the
mean over its clips (:func:`tagger.predict.aggregate`); every figure here is computed that
way.

Everything is chosen inside cross-validation grouped by artist (:class:`GroupKFold`): the
regularisation ``C`` and each genre's operating point come from an inner cross-validation on
the outer training folds only, and the outer folds' predictions give the figures reported.
The final head uses ``C`` and operating points chosen the same way on all tracks. A genre's
operating point is an intercept shift, so the head keeps one written threshold (the default
genre head's, so that both can be used together).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GroupKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .examples import Examples

__all__ = ["C_GRID", "LabelFigures", "Learned", "Settings", "fit_task", "wilson"]

C_GRID = (0.01, 0.1, 1.0)  # inverse regularisation strengths tried, on standardised inputs
POINTS = np.round(np.arange(0.05, 0.951, 0.025), 3)  # operating points tried per genre
INNER_FOLDS = 3
_FAR = 30.0  # a logit no sigmoid distinguishes from certainty


class LearnError(Exception):
    """The examples cannot be learned from at all (one line saying why)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a label must show to be written, and how it is judged."""

    min_tracks: int = 10
    min_precision: float = 0.7
    folds: int = 5
    threshold: float = 0.25  # the written threshold of a genre head


@dataclasses.dataclass
class LabelFigures:
    """One label's cross-validated figures and verdict."""

    label: str
    tracks: int
    groups: int
    learned: bool = False
    reason: str = ""
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    written: int = 0  # tracks it was written on in the cross-validation
    correct: int = 0
    point: float | None = None  # genre: the operating point, in the head's own probability
    precision_ci: tuple[float, float] | None = None
    recall_ci: tuple[float, float] | None = None


@dataclasses.dataclass
class Learned:
    """The outcome of learning one task."""

    task: str
    labels: list[str]  # those in the head, in its output order
    estimator: Any | None  # the fitted scikit-learn pipeline; None: no label learned
    threshold: float | None
    figures: list[LabelFigures]
    tracks: int
    groups: int
    folds: int
    C: float | None = None
    accuracy: float | None = None  # mood: over every labelled track
    accuracy_ci: tuple[float, float] | None = None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval (95%) of a proportion ``k / n``; None when ``n`` is 0."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _logit(p: float | np.ndarray) -> Any:
    return np.log(p) - np.log1p(-p)


# -- the clip-level model and the track-level probabilities


@dataclasses.dataclass
class _Clips:
    """Every track's clips stacked, with where each track's rows start."""

    rows: np.ndarray  # float32 [n_clips_total, dim]
    starts: np.ndarray  # [n_tracks]
    counts: np.ndarray  # [n_tracks]

    @classmethod
    def of(cls, clips: list[np.ndarray]) -> _Clips:
        counts = np.array([len(c) for c in clips])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return cls(np.concatenate(clips).astype(np.float32), starts, counts)

    def subset(self, idx: np.ndarray) -> _Clips:
        parts = [self.rows[s:s + n] for s, n in zip(self.starts[idx], self.counts[idx])]
        return _Clips.of(parts)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """The per-track mean of per-clip ``values`` ``[n_clips_total, ...]``."""
        sums = np.add.reduceat(values, self.starts, axis=0)
        return sums / self.counts.reshape(-1, *([1] * (values.ndim - 1)))


def _linear(pipe: Pipeline, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W [dim, width], b [width])`` of a fitted pipeline on standardised inputs; a label
    the fold had no positives (or negatives) of gets a constant logit."""
    model = pipe[-1]
    dim = pipe[0].mean_.shape[0]
    W, b = np.zeros((dim, width)), np.zeros(width)
    if isinstance(model, OneVsRestClassifier):
        for k, est in enumerate(model.estimators_):
            if hasattr(est, "coef_"):
                W[:, k], b[k] = est.coef_[0], est.intercept_[0]
            else:  # sklearn's constant predictor
                b[k] = _FAR if est.y_[0] else -_FAR
    elif len(model.coef_) == 1 and len(model.classes_) == 2:  # binary: one logit
        b[:] = -_FAR
        b[model.classes_[0]] = 0.0
        W[:, model.classes_[1]], b[model.classes_[1]] = model.coef_[0], model.intercept_[0]
    else:
        b[:] = -_FAR
        W[:, model.classes_], b[model.classes_] = model.coef_.T, model.intercept_
    return W, b


def _clip_logits(pipe: Pipeline, clips: _Clips, width: int) -> np.ndarray:
    W, b = _linear(pipe, width)
    return pipe[0].transform(clips.rows) @ W + b


@dataclasses.dataclass
class _OneMood:
    """What a fold whose training tracks have a single mood predicts: that mood."""
    classes_: np.ndarray
    coef_: np.ndarray
    intercept_: np.ndarray


def _fit(X: np.ndarray, y: np.ndarray, C: float, multilabel: bool) -> Pipeline:
    if not multilabel and len(np.unique(y)) < 2:
        scaler = StandardScaler().fit(X)
        return Pipeline([("scale", scaler), ("one", _OneMood(
            np.unique(y), np.zeros((1, X.shape[1])), np.zeros(1)))])
    model = LogisticRegression(C=C, max_iter=2000)
    pipe = make_pipeline(StandardScaler(), OneVsRestClassifier(model) if multilabel else model)
    with warnings.catch_warnings():  # a label absent from a fold; slow convergence
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipe.fit(X, y)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -_FAR * 2, _FAR * 2)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _track_probs(logits: np.ndarray, clips: _Clips, multilabel: bool) -> np.ndarray:
    return clips.mean(_sigmoid(logits) if multilabel else _softmax(logits))


# -- genres: one sigmoid each, an operating point each


def _shifts(points: np.ndarray, threshold: float) -> np.ndarray:
    """The intercept shift that makes a clip probability of ``point`` the written
    ``threshold``."""
    return _logit(points) - _logit(threshold)


def _decisions(logits: np.ndarray, clips: _Clips, shift: np.ndarray,
               threshold: float) -> np.ndarray:
    """Track decisions ``[n_tracks, n_labels]`` with per-label intercept shifts."""
    return clips.mean(_sigmoid(logits - shift)) >= threshold


def _choose_points(logits: np.ndarray, clips: _Clips, Y: np.ndarray,
                   settings: Settings) -> np.ndarray:
    """Per label, the operating point of best F1 among those whose precision reaches the
    floor (else of best F1) on out-of-fold logits."""
    shifts = _shifts(POINTS, settings.threshold)
    dec = np.stack([_decisions(logits, clips, s, settings.threshold) for s in shifts])
    tp = (dec & Y).sum(axis=1)
    predicted = dec.sum(axis=1)
    precision = tp / np.maximum(predicted, 1)
    f1 = 2 * tp / np.maximum(predicted + Y.sum(axis=0), 1)
    ok = (precision >= settings.min_precision) & (tp > 0)
    score = np.where(ok, f1 + 1.0, f1)  # a point that reaches the floor beats any other
    return POINTS[np.argmax(score, axis=0)]


def _oof(X: np.ndarray, y: np.ndarray, clips: _Clips, groups: np.ndarray, C: float,
         folds: int, width: int, multilabel: bool) -> np.ndarray:
    """Out-of-fold clip logits ``[n_clips_total, width]`` of a grouped cross-validation."""
    out = np.zeros((len(clips.rows), width))
    owner = np.repeat(np.arange(len(clips.counts)), clips.counts)
    for train, test in GroupKFold(n_splits=folds).split(X, y, groups):
        pipe = _fit(X[train], y[train], C, multilabel)
        # test is sorted, so its tracks' rows come in the same order as in clips
        out[np.isin(owner, test)] = _clip_logits(pipe, clips.subset(test), width)
    return out


def _inner_choice(X: np.ndarray, y: np.ndarray, clips: _Clips, groups: np.ndarray,
                  width: int, multilabel: bool, settings: Settings
                  ) -> tuple[float, np.ndarray | None]:
    """``C`` (and, for genres, the operating points) chosen by a grouped cross-validation
    of these tracks only."""
    folds = min(INNER_FOLDS, len(set(groups)))
    if folds < 2:
        return C_GRID[1], None
    best: tuple[float, float, np.ndarray] | None = None
    for C in C_GRID:
        logits = _oof(X, y, clips, groups, C, folds, width, multilabel)
        probs = _track_probs(logits, clips, multilabel)
        if multilabel:
            scores = [average_precision_score(y[:, k], probs[:, k]) for k in range(width)
                      if 0 < y[:, k].sum() < len(y)]
            score = float(np.mean(scores)) if scores else 0.0
        else:  # mean log-likelihood of the true mood
            score = float(np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-9))))
        if best is None or score > best[0]:
            best = (score, C, logits)
    assert best is not None
    _, C, logits = best
    points = _choose_points(logits, clips, y.astype(bool), settings) if multilabel else None
    return C, points


def _cross_fit(X: np.ndarray, y: np.ndarray, clips: _Clips, groups: np.ndarray, folds: int,
               width: int, multilabel: bool, settings: Settings) -> np.ndarray:
    """Outer out-of-fold predictions: genre decisions ``[n, width]`` (bool) or mood indices
    ``[n]``, everything chosen on each outer fold's training tracks. A mood of ``-1`` (one
    that is not learned) is never trained on, but its tracks are predicted like the others:
    at run time such a track gets one of the learned moods too, and that counts against it."""
    out = np.zeros((len(X), width), bool) if multilabel else np.full(len(X), -1)
    for train, test in GroupKFold(n_splits=folds).split(X, y, groups):
        if not multilabel:
            train = train[y[train] >= 0]
            if not len(train):
                continue
        C, points = _inner_choice(X[train], y[train], clips.subset(train), groups[train],
                                  width, multilabel, settings)
        pipe = _fit(X[train], y[train], C, multilabel)
        sub = clips.subset(test)
        logits = _clip_logits(pipe, sub, width)
        if multilabel:
            shift = _shifts(points, settings.threshold) if points is not None else 0.0
            out[test] = _decisions(logits, sub, shift, settings.threshold)
        else:
            out[test] = np.argmax(_track_probs(logits, sub, False), axis=1)
    return out


def _figures(fig: LabelFigures, written: np.ndarray, truth: np.ndarray) -> LabelFigures:
    tp, n_written, n_true = int((written & truth).sum()), int(written.sum()), int(truth.sum())
    fig.written, fig.correct = n_written, tp
    fig.precision = tp / n_written if n_written else 0.0
    fig.recall = tp / n_true if n_true else 0.0
    fig.f1 = 2 * tp / (n_written + n_true) if n_written + n_true else 0.0
    fig.precision_ci, fig.recall_ci = wilson(tp, n_written), wilson(tp, n_true)
    return fig


def _judge(fig: LabelFigures, settings: Settings) -> None:
    assert fig.precision is not None
    if fig.written == 0:
        fig.reason = "never written in the cross-validation"
    elif fig.precision < settings.min_precision:
        fig.reason = (f"precision {fig.precision:.2f} below the floor "
                      f"{settings.min_precision:.2f}")
    else:
        fig.learned = True


def fit_task(examples: Examples, settings: Settings) -> Learned:
    """Judge every label by grouped cross-validation and fit the head on those that pass.

    Raises
    ------
    LearnError
        Fewer than two artists (nothing to cross-validate on), or no labelled track.
    """
    multilabel = examples.task == "genre"
    groups = np.asarray(examples.groups)
    n_groups = len(set(examples.groups))
    if not examples.paths:
        raise LearnError("no track with a label to learn from")
    if n_groups < 2:
        raise LearnError(f"the {len(examples.paths)} labelled tracks are all by one artist: "
                         "cross-validation by artist needs at least two")
    folds = min(settings.folds, n_groups)
    figures = {}
    for label in examples.vocabulary:
        have = [i for i, labels in enumerate(examples.labels) if label in labels]
        figures[label] = LabelFigures(label, len(have), len({examples.groups[i] for i in have}))
    n = len(examples.paths)
    for f in figures.values():
        if f.tracks < settings.min_tracks:
            f.reason = f"not learnable yet: {f.tracks} tracks (needs {settings.min_tracks})"
        elif multilabel and n - f.tracks < settings.min_tracks:
            f.reason = (f"on {f.tracks} of {n} tracks: too few without it to learn what it "
                        "is not")
    candidates = [f.label for f in figures.values() if not f.reason]
    X, clips = examples.pooled, _Clips.of(examples.clips)
    learned = Learned(examples.task, [], None, settings.threshold if multilabel else None,
                      list(figures.values()), len(examples.paths), n_groups, folds)
    if multilabel:
        _fit_genres(examples, X, clips, groups, folds, candidates, figures, settings, learned)
    else:
        _fit_moods(examples, X, clips, groups, folds, candidates, figures, settings, learned)
    return learned


def _fit_genres(examples: Examples, X: np.ndarray, clips: _Clips, groups: np.ndarray,
                folds: int, candidates: list[str], figures: dict[str, LabelFigures],
                settings: Settings, learned: Learned) -> None:
    if not candidates:
        return
    Y = np.array([[label in labels for label in candidates] for labels in examples.labels],
                 dtype=int)
    written = _cross_fit(X, Y, clips, groups, folds, len(candidates), True, settings)
    for k, label in enumerate(candidates):
        _judge(_figures(figures[label], written[:, k], Y[:, k].astype(bool)), settings)
    keep = [k for k, label in enumerate(candidates) if figures[label].learned]
    if not keep:
        return
    Y = Y[:, keep]
    C, points = _inner_choice(X, Y, clips, groups, len(keep), True, settings)
    points = points if points is not None else np.full(len(keep), settings.threshold)
    pipe = _fit(X, Y, C, True)
    for est, shift in zip(pipe[-1].estimators_, _shifts(points, settings.threshold)):
        est.intercept_ = est.intercept_ - shift  # its operating point becomes the threshold
    learned.labels = [candidates[k] for k in keep]
    for label, point in zip(learned.labels, points):
        figures[label].point = float(point)
    learned.estimator, learned.C = pipe, C


def _fit_moods(examples: Examples, X: np.ndarray, clips: _Clips, groups: np.ndarray,
               folds: int, candidates: list[str], figures: dict[str, LabelFigures],
               settings: Settings, learned: Learned) -> None:
    """Moods are judged on every labelled track: one whose mood is not learned gets a
    learned one at run time, which is a wrong one."""
    moods = list(candidates)
    truth = [labels[0] for labels in examples.labels]
    while len(moods) >= 2:  # a mood below the floor goes, and the others are judged again
        y = np.array([moods.index(m) if m in moods else -1 for m in truth])
        pred = _cross_fit(X, y, clips, groups, folds, len(moods), False, settings)
        for k, mood in enumerate(moods):
            figures[mood].learned, figures[mood].reason = False, ""
            _judge(_figures(figures[mood], pred == k, y == k), settings)
        failing = [m for m in moods if not figures[m].learned]
        if not failing:
            kept = y >= 0
            C, _ = _inner_choice(X[kept], y[kept], clips.subset(np.flatnonzero(kept)),
                                 groups[kept], len(moods), False, settings)
            learned.estimator, learned.C = _fit(X[kept], y[kept], C, False), C
            learned.labels = moods
            correct = int((pred == y).sum())
            learned.accuracy, learned.accuracy_ci = correct / len(y), wilson(correct, len(y))
            return
        worst = min(failing, key=lambda m: figures[m].precision or 0.0)
        moods.remove(worst)
    for mood in moods:  # one mood left: nothing to choose between
        figures[mood].learned = False
        figures[mood].reason = "the only mood left: a mood head needs two"
