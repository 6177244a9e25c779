"""The exported default model on the test split, once: metrics with bootstrap intervals, the
logistic baseline beside it, Classical on both of its sources, and the vocabulary rule."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..evaluate import multi_label_metrics, single_label_metrics
from ..heads import clip_average
from ..vocabulary import ShipRule
from .choose import Choice
from .corpus import CLASSICAL, Corpus

log = logging.getLogger(__name__)

__all__ = ["bootstrap", "genre_stats", "model_probabilities", "test_report"]

BOOTSTRAP = 1000


def model_probabilities(model: Path, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Genre and mood track probabilities of ``paths`` through the tagger's own Analyzer
    (decoding, clips, onnxruntime, aggregation: what a user's library gets)."""
    from tagger.model import load_models
    from tagger.predict import Analyzer

    analyzer = Analyzer(load_models(model, device="cpu"))
    genre, mood = [], []
    for path in paths:
        result = analyzer.analyze(path)
        genre.append(result.heads["genre"].probs)
        mood.append(result.heads["emotion"].probs)
    return np.stack(genre), np.stack(mood)


def bootstrap(groups: np.ndarray, stat, n: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """95% percentile intervals of ``stat(indices) -> array`` over resampled *groups* (artists:
    tracks of one artist are not independent), ``[2, ...]``; NaN where undefined."""
    rng = np.random.default_rng(seed)
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    draws = []
    for _ in range(n):
        pick = rng.integers(0, len(names), len(names))
        draws.append(stat(np.concatenate([members[g] for g in pick])))
    with warnings.catch_warnings():  # a statistic undefined in every draw stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(np.array(draws, dtype=float), [2.5, 97.5], axis=0)


def genre_stats(y: np.ndarray, p: np.ndarray, t: float) -> np.ndarray:
    """``[micro-F1, mean ROC-AUC, then per label: precision, recall, F1, ROC-AUC]`` in numpy
    (a bootstrap calls it a thousand times); NaN where undefined (no positives, nothing
    written, one class only)."""
    from scipy.stats import rankdata

    truth, decided = y > 0, p >= t
    tp = (truth & decided).sum(0).astype(float)
    fp = (~truth & decided).sum(0).astype(float)
    fn = (truth & ~decided).sum(0).astype(float)
    pos, neg = truth.sum(0), (~truth).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(pos > 0, tp / pos, np.nan)
        f1 = np.where(pos > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        ranks = rankdata(p, axis=0)
        auc = np.where((pos > 0) & (neg > 0),
                       ((ranks * truth).sum(0) - pos * (pos + 1) / 2) / (pos * neg), np.nan)
        micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    mean_auc = np.nanmean(auc) if np.isfinite(auc).any() else np.nan
    return np.concatenate([[micro, mean_auc], np.stack([precision, recall, f1, auc], 1).ravel()])


def _genre_block(y, p, labels, t, groups) -> dict:
    m = multi_label_metrics(y, p, labels, t)
    ci = bootstrap(groups, lambda idx: genre_stats(y[idx], p[idx], t))
    m["micro_f1_ci"], m["macro_roc_auc_ci"] = ci[:, 0].tolist(), ci[:, 1].tolist()
    for j, label in enumerate(labels):
        row = m["per_label"][label]
        row["written"] = int((p[:, j] >= t).sum())
        for k, key in enumerate(("precision", "recall", "f1", "roc_auc")):
            row[key + "_ci"] = ci[:, 2 + 4 * j + k].tolist()
    return m


def _mood_block(truth, p, labels, groups) -> dict:
    m = single_label_metrics(truth, p, labels)
    ci = bootstrap(groups, lambda idx: np.array([np.mean(p[idx].argmax(1) == truth[idx])]))
    m["accuracy_ci"] = ci[:, 0].tolist()
    return m


def test_report(choice: Choice, corpus: Corpus, model: Path, rule: ShipRule,
                vetoes: dict[str, str] | None = None) -> dict:
    """Every test figure, computed from one pass of the exported model over the test files.

    Genre figures are over the 4Q test tracks (their AllMusic genres are the truth);
    Classical is also judged on the held-out GTZAN block, and its false positives on every
    held-out 4Q track that is not classical. ``vetoes`` (label -> reason) keeps labels that
    pass the rule out of the shipped set (the soundtrack check).
    """
    test = corpus.test
    genre_p, mood_p = model_probabilities(model, test.paths)
    # the ONNX files must say what the heads say in numpy on the cached embeddings, rounded
    # to float16 as the tagger rounds them before any head (tagger.result.ClipEmbeddings)
    seen = [c.astype(np.float16).astype(np.float32) for c in test.clips]
    parity = float(np.abs(genre_p - clip_average(choice.genre, seen)).max())
    labels, t = corpus.genres, choice.threshold
    q4, gz = test.source == "4q", test.source == "gtzan"
    y, g = test.genres[q4], test.groups[q4]
    report: dict = {"tracks": {"4q": int(q4.sum()), "gtzan": int(gz.sum())},
                    "onnx_vs_numpy_max_diff": parity}
    report["genre"] = _genre_block(y, genre_p[q4], labels, t, g)
    base_p = clip_average(choice.baseline_genre, test.clips)
    report["baseline_genre"] = _genre_block(y, base_p[q4], labels, t, g)
    report["mood"] = _mood_block(test.mood[q4], mood_p[q4], corpus.moods, g)
    report["baseline_mood"] = _mood_block(
        test.mood[q4], clip_average(choice.baseline_mood, test.clips)[q4], corpus.moods, g)

    c = labels.index(CLASSICAL)
    written = genre_p[:, c] >= t
    classical_4q = q4 & (test.genres[:, c] > 0)
    others = q4 & (test.genres[:, c] == 0)
    report["classical"] = {
        "recall_gtzan": float(written[gz].mean()), "gtzan_tracks": int(gz.sum()),
        "recall_4q": float(written[classical_4q].mean()) if classical_4q.any() else None,
        "classical_4q_tracks": int(classical_4q.sum()),
        "false_positive_rate": float(written[others].mean()),
        "false_positives": int(written[others].sum()), "other_tracks": int(others.sum()),
    }
    # Classical's verdict is taken on 4Q and GTZAN test tracks together (4Q alone holds too
    # few classical tracks to judge it); every other label on 4Q's
    both = _genre_block(test.genres, genre_p, labels, t, test.groups)["per_label"][CLASSICAL]
    verdicts = {}
    for label in labels:
        row = both if label == CLASSICAL else report["genre"]["per_label"][label]
        verdicts[label] = rule.verdict(row["roc_auc"], row["precision"], row["support"],
                                       row["written"]) or (vetoes or {}).get(label)
    report["classical"]["judged_on"] = {k: both[k] for k in
                                        ("roc_auc", "precision", "recall", "support", "written")}
    report["verdicts"] = verdicts
    shipped = [i for i, l in enumerate(labels) if verdicts[l] is None]
    report["shipped"] = [labels[i] for i in shipped]
    report["genre_shipped"] = _genre_block(y[:, shipped], genre_p[q4][:, shipped],
                                           report["shipped"], t, g)
    report["no_genre_share"] = float(
        (genre_p[q4][:, shipped] < t).all(axis=1).mean()) if shipped else 1.0
    report["baseline_genre_shipped"] = _genre_block(y[:, shipped], base_p[q4][:, shipped],
                                                    report["shipped"], t, g)
    return report
