"""Choose a head by cross-validation grouped by artist, honestly.

Every candidate (a family and its regularisation) is scored on out-of-fold predictions: each
track is predicted by a head fitted on folds that hold none of its artist's tracks, applied per
clip and averaged as the tagger does. Calibration is *cross-fitted*: the Platt parameters that
score fold ``k`` were fitted on the other folds' out-of-fold logits, so the figures of a
calibrated candidate are as unseen as those of a plain one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np

from tagger.predict import aggregate

from .evaluate import multi_label_metrics
from .heads import DenseHead, activate, calibrate_logits, fit_logistic, fit_mlp, track_means

log = logging.getLogger(__name__)

__all__ = ["Candidate", "Scored", "cross_fitted", "folds_by_group", "genre_candidates",
           "mood_candidates", "out_of_fold", "score_candidates"]

Fit = Callable[[np.ndarray, np.ndarray], DenseHead]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A head family with fixed hyperparameters; ``calibrated`` adds Platt scaling."""

    family: str
    param: float
    calibrated: bool = False

    @property
    def name(self) -> str:
        what = "C" if self.family == "logistic" else "alpha"
        return f"{self.family} {what}={self.param:g}" + (" + Platt" if self.calibrated else "")

    def fit(self, x: np.ndarray, y: np.ndarray, multi_label: bool, seed: int = 0) -> DenseHead:
        if self.family == "logistic":
            return fit_logistic(x, y, self.param, multi_label)
        return fit_mlp(x, y, self.param, multi_label, seed=seed)


def genre_candidates() -> list[Candidate]:
    """Linear and small MLP heads, each plain and calibrated."""
    base = [Candidate("logistic", c) for c in (0.003, 0.01, 0.03, 0.1)]
    base += [Candidate("mlp", a) for a in (1.0, 3.0, 10.0)]
    return base + [dataclasses.replace(c, calibrated=True) for c in base]


def mood_candidates() -> list[Candidate]:
    """Mood is decided by the argmax, which calibration does not move: no Platt variants."""
    return ([Candidate("logistic", c) for c in (0.003, 0.01, 0.03, 0.1, 0.3)]
            + [Candidate("mlp", a) for a in (1.0, 3.0, 10.0)])


def folds_by_group(groups: Sequence[str], strata: np.ndarray, n_splits: int = 5,
                   seed: int = 0) -> np.ndarray:
    """Fold number per track: no group on two folds, strata balanced as far as groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = np.full(len(groups), -1)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(groups)), strata, groups)):
        folds[held] = k
    return folds


def out_of_fold(candidate: Candidate, clips: Sequence[np.ndarray], y: np.ndarray,
                folds: np.ndarray, multi_label: bool, seed: int = 0) -> list[np.ndarray]:
    """Per track, the clip logits ``[n_clips, n_labels]`` of a head fitted without its fold."""
    x = track_means(clips)
    logits: list[np.ndarray] = [np.empty(0)] * len(clips)
    for k in np.unique(folds):
        train, held = folds != k, np.flatnonzero(folds == k)
        head = candidate.fit(x[train], y[train], multi_label, seed)
        for i in held:
            logits[i] = head.logits(clips[i])
    return logits


def averaged(logits: Sequence[np.ndarray], multi_label: bool,
             scale: np.ndarray | None = None, shift: np.ndarray | None = None) -> np.ndarray:
    """Track probabilities from clip logits (optionally ``scale * logit + shift``)."""
    out = []
    for z in logits:
        if scale is not None:
            z = z * scale + shift
        out.append(aggregate(activate(z, "sigmoid" if multi_label else "softmax")))
    return np.stack(out)


def cross_fitted(logits: Sequence[np.ndarray], y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Calibrated out-of-fold probabilities: fold ``k`` through Platt parameters fitted on the
    out-of-fold logits of the other folds. (Those logits come from heads that saw fold ``k``;
    a second-order leak that can only flatter calibration, which still lost.)"""
    probs = np.zeros(y.shape)
    for k in np.unique(folds):
        rest = np.flatnonzero(folds != k)
        scale, shift = calibrate_logits([logits[i] for i in rest], y[rest])
        held = np.flatnonzero(folds == k)
        probs[held] = averaged([logits[i] for i in held], True, scale, shift)
    return probs


@dataclasses.dataclass
class Scored:
    """A candidate's out-of-fold figures."""

    candidate: Candidate
    score: float
    metrics: dict
    probs: np.ndarray

    def row(self) -> dict:
        keep = ("accuracy", "micro_f1", "macro_roc_auc", "macro_f1")
        return {"head": self.candidate.name, "score": round(self.score, 4),
                **{k: round(self.metrics[k], 4) for k in keep
                   if isinstance(self.metrics.get(k), float)}}


def score_candidates(candidates: Sequence[Candidate], clips: Sequence[np.ndarray],
                     y: np.ndarray, labels: Sequence[str], folds: np.ndarray,
                     multi_label: bool, threshold: float = 0.2, seed: int = 0) -> list[Scored]:
    """Every candidate's grouped out-of-fold figures, best first.

    Genre (``multi_label``): scored by micro-F1 at ``threshold`` on the clip-averaged
    probabilities (ties: mean ROC-AUC). Mood: by accuracy. A calibrated candidate reuses its
    plain twin's out-of-fold logits and is calibrated by :func:`cross_fitted`.
    """
    from .evaluate import single_label_metrics

    plain: dict[tuple[str, float], list[np.ndarray]] = {}
    scored = []
    for cand in candidates:
        key = (cand.family, cand.param)
        if key not in plain:
            plain[key] = out_of_fold(cand, clips, y, folds, multi_label, seed)
        logits = plain[key]
        if multi_label:
            probs = (cross_fitted(logits, y, folds) if cand.calibrated
                     else averaged(logits, True))
            metrics = multi_label_metrics(y, probs, labels, threshold)
            score = metrics["micro_f1"] + 1e-3 * (metrics["macro_roc_auc"] or 0.0)
        else:
            probs = averaged(logits, False)
            metrics = single_label_metrics(y, probs, labels)
            score = metrics["accuracy"]
        scored.append(Scored(cand, float(score), metrics, probs))
        log.info("%-28s %s", cand.name, scored[-1].row())
    return sorted(scored, key=lambda s: -s.score)
