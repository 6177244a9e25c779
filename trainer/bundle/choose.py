"""Pick the default heads: grouped cross-validation on the training side, validation to
choose between the families, an honest (cross-fitted) look at the written threshold."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from ..evaluate import DEFAULT_THRESHOLD, multi_label_metrics, single_label_metrics
from ..head_selection import (Candidate, Scored, folds_by_group, genre_candidates,
                              mood_candidates, score_candidates)
from ..heads import DenseHead, clip_average, track_means
from .corpus import CLASSICAL, Corpus, Part

log = logging.getLogger(__name__)

__all__ = ["Choice", "DEFAULT_THRESHOLD", "choose", "classical_shift", "cross_fit_threshold"]

THRESHOLDS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
# A false Classical costs more than a missed one: it is written where the head's own
# probability reaches this, not at the shared threshold.
CLASSICAL_PROBABILITY = 0.5


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def classical_shift(labels: list[str], threshold: float) -> np.ndarray:
    """Logit shifts that move Classical's written point from ``threshold`` to
    :data:`CLASSICAL_PROBABILITY` (0 for the other labels)."""
    shift = np.zeros(len(labels))
    if CLASSICAL in labels:
        shift[labels.index(CLASSICAL)] = _logit(threshold) - _logit(CLASSICAL_PROBABILITY)
    return shift


def cross_fit_threshold(probs: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict:
    """Threshold chosen on the other folds' out-of-fold probabilities, scored on each fold.

    Returns the micro-F1 of that cross-fitted choice next to the fixed default's, per fold
    and pooled, and the thresholds the folds chose.
    """
    def f1(mask: np.ndarray, t: float) -> float:
        return multi_label_metrics(y[mask], probs[mask], [str(j) for j in range(y.shape[1])],
                                   t)["micro_f1"]

    chosen, tuned, fixed = [], [], []
    for k in np.unique(folds):
        rest, held = folds != k, folds == k
        best = max(THRESHOLDS, key=lambda t: f1(rest, t))
        chosen.append(best)
        tuned.append(f1(held, best))
        fixed.append(f1(held, DEFAULT_THRESHOLD))
    gain = float(np.mean(tuned) - np.mean(fixed))
    return {"chosen_per_fold": chosen, "tuned_f1_per_fold": tuned, "default_f1_per_fold": fixed,
            "gain": gain, "gain_sd": float(np.std(np.subtract(tuned, fixed)))}


@dataclasses.dataclass
class Choice:
    """What was chosen, the final heads (fitted on training + validation) and the record."""

    genre: DenseHead
    mood: DenseHead
    baseline_genre: DenseHead
    baseline_mood: DenseHead
    threshold: float
    record: dict


def _fit(cand: Candidate, part: Part, multi: bool, seed: int) -> DenseHead:
    y = part.genres if multi else part.mood
    return cand.fit(track_means(part.clips), y, multi, seed)


def _validation(cand: Candidate, train: Part, val: Part, multi: bool,
                seed: int) -> np.ndarray:
    """Validation probabilities of ``cand`` fitted on the training side."""
    return clip_average(_fit(cand, train, multi, seed), val.clips)


def _unseen(scored: Scored, val_probs: np.ndarray, train_y: np.ndarray, val_y: np.ndarray,
            labels: list[str], multi: bool) -> dict:
    """Figures over every prediction made for unseen tracks: the training side's out-of-fold
    predictions and the validation split's, pooled (validation alone, ~70 tracks, cannot tell
    two families apart; the pool can, and no figure in it saw its track)."""
    probs = np.concatenate([scored.probs, val_probs])
    if multi:
        y = np.concatenate([train_y, val_y])
        pooled = multi_label_metrics(y, probs, labels, DEFAULT_THRESHOLD)
        alone = multi_label_metrics(val_y, val_probs, labels, DEFAULT_THRESHOLD)
        keys = ("micro_f1", "macro_roc_auc")
    else:
        y = np.concatenate([train_y, val_y])
        pooled = single_label_metrics(y, probs, labels)
        alone = single_label_metrics(val_y, val_probs, labels)
        keys = ("accuracy",)
    return {"head": scored.candidate.name,
            **{f"validation_{k}": alone[k] for k in keys}, **{k: pooled[k] for k in keys}}


def _best_per_family(scored: list[Scored]) -> dict[str, Candidate]:
    out: dict[str, Candidate] = {}
    for s in scored:  # best first
        out.setdefault(s.candidate.family + (" + Platt" if s.candidate.calibrated else ""),
                       s.candidate)
    return out


def choose(corpus: Corpus, seed: int = 0, folds: int = 5) -> Choice:
    """Grouped CV on the training side; between the families' best, the pooled unseen
    predictions (out-of-fold + validation); threshold cross-fit; then the chosen heads and
    the logistic baselines refitted on training + validation."""
    train, val = corpus.train, corpus.validation
    strata = np.where(train.mood >= 0, train.mood, len(corpus.moods))
    fold = folds_by_group(train.groups, strata, folds, seed)
    record: dict = {"folds": folds, "seed": seed}

    genre_cv = score_candidates(genre_candidates(), train.clips, train.genres, corpus.genres,
                                fold, True, DEFAULT_THRESHOLD, seed)
    record["genre_cv"] = [s.row() for s in genre_cv]
    finalists = {k: c for k, c in _best_per_family(genre_cv).items() if not c.calibrated}
    by_cand = {s.candidate: s for s in genre_cv}
    rows = {k: _unseen(by_cand[c], _validation(c, train, val, True, seed), train.genres,
                       val.genres, corpus.genres, True) for k, c in finalists.items()}
    record["genre_validation"] = rows
    family = max(rows, key=lambda k: (rows[k]["micro_f1"], rows[k]["macro_roc_auc"]))
    genre_cand = finalists[family]
    log.info("genre families on unseen tracks: %s", rows)

    chosen_oof = by_cand[genre_cand]
    record["threshold_cross_fit"] = cross_fit_threshold(chosen_oof.probs, train.genres, fold)
    fits = record["threshold_cross_fit"]
    threshold = DEFAULT_THRESHOLD
    if fits["gain"] > 0.01 and fits["gain"] > fits["gain_sd"] / math.sqrt(folds):
        threshold = float(np.median(fits["chosen_per_fold"]))
    record["threshold"] = threshold

    mood_part, mood_fold = train.with_mood, fold[train.mood >= 0]
    mood_cv = score_candidates(mood_candidates(), mood_part.clips, mood_part.mood,
                               corpus.moods, mood_fold, False, seed=seed)
    record["mood_cv"] = [s.row() for s in mood_cv]
    mfinal = _best_per_family(mood_cv)
    mby = {s.candidate: s for s in mood_cv}
    mrows = {k: _unseen(mby[c], _validation(c, mood_part, val, False, seed), mood_part.mood,
                        val.mood, corpus.moods, False) for k, c in mfinal.items()}
    record["mood_validation"] = mrows
    mood_cand = mfinal[max(mrows, key=lambda k: mrows[k]["accuracy"])]
    log.info("mood families on unseen tracks: %s", mrows)
    record["genre_head"], record["mood_head"] = genre_cand.name, mood_cand.name
    log.info("genre head %s (threshold %g), mood head %s", genre_cand.name, threshold,
             mood_cand.name)

    both = train + val
    shift = classical_shift(corpus.genres, threshold)
    genre = _fit(genre_cand, both, True, seed).with_output(np.ones(len(shift)), shift)
    mood = _fit(mood_cand, both.with_mood, False, seed)
    base_g = _fit(finalists["logistic"], both, True, seed)
    base_m = _fit(mfinal["logistic"], both.with_mood, False, seed)
    record["baseline_genre_head"] = finalists["logistic"].name
    record["baseline_mood_head"] = mfinal["logistic"].name
    return Choice(genre, mood, base_g, base_m, threshold, record)

