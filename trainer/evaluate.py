"""Track-level evaluation, as the tagger sees tracks.

Exported models are evaluated by running them through :class:`tagger.predict.Analyzer` on the
held-out files: the same decoding, clips, features and aggregation (the clip mean) as in use.
During training, clip predictions of Keras models are aggregated by the very same
:func:`tagger.predict.aggregate`.

Single-label sets: accuracy, balanced accuracy, per-class recall and a confusion matrix (the
decision is the argmax). Multi-label sets (and every genre head, which decides by threshold):
per-label precision, recall and F1 at the stored threshold, micro/macro F1 and ROC-AUC.

Needs scikit-learn and matplotlib (the ``train`` extra), not TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagger.audio import AudioError
from tagger.model import HeadSpec, ModelSet, load_models
from tagger.predict import Analyzer, aggregate

from .datasets import load_dataset
from .splits import read_splits, recorded_split

log = logging.getLogger(__name__)

__all__ = [
    "THRESHOLD_GRID",
    "aggregate_tracks",
    "align_labels",
    "evaluate_models",
    "evaluate_run",
    "format_metrics",
    "multi_label_metrics",
    "plot_confusion",
    "single_label_metrics",
    "task_metrics",
    "track_probabilities",
    "tune_threshold",
]

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
DEFAULT_THRESHOLD = 0.2


def aggregate_tracks(clip_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Track probabilities ``[n_tracks, n_labels]`` from per-track clip probabilities, with the
    tagger's own aggregation."""
    return np.stack([aggregate(p) for p in clip_probs])


def track_probabilities(models: ModelSet, paths: Sequence[str | Path], task: str,
                        progress: bool = True) -> tuple[np.ndarray, list[int]]:
    """Track probabilities of ``task`` for audio files, through the tagger's Analyzer.

    Files that cannot be analysed are logged (one line) and skipped.

    Returns
    -------
    probs : np.ndarray [shape=(n_ok, n_labels)]
    kept : list of int
        Positions in ``paths`` of the analysed files.
    """
    from tqdm import tqdm

    analyzer = Analyzer(models)
    probs, kept = [], []
    for i, path in enumerate(tqdm(paths, desc="evaluate", unit="file", file=sys.stderr,
                                  disable=not progress, dynamic_ncols=True, leave=False)):
        try:
            result = analyzer.analyze(path)
        except (AudioError, OSError) as err:
            log.warning("skipping %s: %s", path, err)
            continue
        probs.append(result.heads[task].probs)
        kept.append(i)
    width = next((len(h.labels) for h, _ in models.specs if h.task == task), 0)
    return (np.stack(probs) if probs else np.zeros((0, width), np.float32)), kept


# --------------------------------------------------------------------------- metrics


def single_label_metrics(truth: np.ndarray, probs: np.ndarray,
                         labels: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, per-class recall and confusion matrix of argmax decisions.

    Parameters
    ----------
    truth : np.ndarray [shape=(n,), int]
        True class index per track.
    probs : np.ndarray [shape=(n, n_labels)]
        Track probabilities.
    labels : sequence of str
        Class names in column order.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(truth, predicted, labels=range(len(labels)))
    support = matrix.sum(axis=1)
    present = support > 0
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        "per_class_recall": {
            label: float(matrix[i, i] / support[i]) for i, label in enumerate(labels)
            if present[i]
        },
        "confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()},
    }


def _auc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC, or None when ``truth`` holds one class only (AUC undefined)."""
    from sklearn.metrics import roc_auc_score

    if truth.min() == truth.max():
        return None
    return float(roc_auc_score(truth, scores))


def multi_label_metrics(targets: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                        threshold: float) -> dict:
    """Per-label precision, recall, F1 at ``threshold``, micro/macro F1 and ROC-AUC.

    Macro averages run over labels with at least one positive (F1) or with both classes
    (ROC-AUC) in ``targets``; the others are undefined on this split.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    truth = targets.astype(int)
    decided = (probs >= threshold).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, decided, average=None, labels=range(len(labels)), zero_division=0)
    aucs = [_auc(truth[:, j], probs[:, j]) for j in range(len(labels))]
    present = support > 0
    defined = [a for a in aucs if a is not None]
    return {
        "threshold": float(threshold),
        "micro_f1": float(f1_score(truth, decided, average="micro", zero_division=0)),
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "micro_roc_auc": _auc(truth.ravel(), probs.ravel()),
        "macro_roc_auc": float(np.mean(defined)) if defined else None,
        "labels_per_track": {"true": float(truth.sum(axis=1).mean()),
                             "predicted": float(decided.sum(axis=1).mean())},
        "per_label": {
            label: {"precision": float(precision[j]), "recall": float(recall[j]),
                    "f1": float(f1[j]), "support": int(support[j]), "roc_auc": aucs[j]}
            for j, label in enumerate(labels)
        },
    }


def task_metrics(targets: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                 multi_label: bool, threshold: float | None) -> dict:
    """The metrics that fit the data and the head: argmax metrics for single-label data,
    threshold metrics for multi-label data and for any head with a threshold (genre)."""
    out: dict = {"tracks": int(len(targets)), "labels": list(labels)}
    if not multi_label:
        out.update(single_label_metrics(targets.argmax(axis=1), probs, labels))
    if multi_label or threshold is not None:
        out.update(multi_label_metrics(targets, probs, labels,
                                       DEFAULT_THRESHOLD if threshold is None else threshold))
    return out


def tune_threshold(targets: np.ndarray, probs: np.ndarray,
                   grid: Sequence[float] = THRESHOLD_GRID) -> float:
    """The threshold on ``grid`` with the best micro F1 (ties: the one nearest 0.2).

    Micro F1 rather than macro: on a validation split of a hundred tracks a rare label's F1
    swings with a single track, and the threshold is one number shared by all labels.
    """
    from sklearn.metrics import f1_score

    truth = targets.astype(int)
    scores = [f1_score(truth, (probs >= t).astype(int), average="micro", zero_division=0)
              for t in grid]
    best = max(scores)
    candidates = [t for t, s in zip(grid, scores) if np.isclose(s, best)]
    return float(min(candidates, key=lambda t: abs(t - DEFAULT_THRESHOLD)))


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Save a confusion matrix (rows: truth, columns: prediction) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    size = 2.5 + 0.45 * len(labels)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > limit else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


# --------------------------------------------------------------------------- models, runs


def align_labels(model_labels: Sequence[str], data_labels: Sequence[str],
                 targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets in the model's label order, matching labels case-insensitively.

    Returns
    -------
    targets : np.ndarray [shape=(n, len(model_labels))]
        Columns of labels the data does not know are zero.
    known : np.ndarray [shape=(len(model_labels),), bool]
        Which model labels the data knows.
    """
    column = {label.casefold(): j for j, label in enumerate(data_labels)}
    out = np.zeros((len(targets), len(model_labels)), dtype=np.float32)
    known = np.zeros(len(model_labels), dtype=bool)
    for i, label in enumerate(model_labels):
        j = column.get(label.casefold())
        if j is not None:
            out[:, i] = targets[:, j]
            known[i] = True
    if not known.any():
        raise ValueError(f"the model's labels {list(model_labels)} share none with the data's "
                         f"{list(data_labels)}")
    return out, known


def _head(models: ModelSet, task: str) -> HeadSpec:
    for head, _ in models.specs:
        if head.task == task:
            return head
    raise ValueError(f"no {task} head among the models")


def evaluate_models(models: ModelSet, task: str, paths: Sequence[str | Path],
                    targets: np.ndarray, data_labels: Sequence[str], multi_label: bool,
                    out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Track-level metrics of the ``task`` head of ``models`` on labelled files.

    Labels are matched to the model's by name (case-insensitive); multi-label metrics cover the
    shared labels, single-label metrics the tracks whose label the model knows. With
    ``out_dir``, a single-label evaluation also saves ``confusion.png`` there.
    """
    head = _head(models, task)
    targets, known = align_labels(head.labels, data_labels, targets)
    if not multi_label:  # a track whose class the model lacks cannot be right or wrong
        usable = targets.sum(axis=1) > 0
        paths = [p for p, ok in zip(paths, usable) if ok]
        targets = targets[usable]
    probs, kept = track_probabilities(models, paths, task, progress)
    targets = targets[kept]
    if not len(kept):
        raise ValueError("no track could be evaluated")
    labels = [label for label, k in zip(head.labels, known) if k]
    if multi_label:
        metrics = task_metrics(targets[:, known], probs[:, known], labels, True, head.threshold)
    else:  # decisions over every model label; rows of the matrix only for known ones
        metrics = task_metrics(targets, probs, head.labels, False, head.threshold)
    metrics.update(task=task, skipped=len(paths) - len(kept))
    if out_dir is not None and "confusion_matrix" in metrics:
        plot_confusion(np.array(metrics["confusion_matrix"]["matrix"]), head.labels,
                       Path(out_dir) / "confusion.png", f"{task}, {len(kept)} tracks")
    return metrics


def evaluate_run(run_dir: str | Path, kind: str | None = None, path: str | Path | None = None,
                 label_mode: str | None = None, progress: bool = True) -> dict:
    """Re-evaluate a run's exported model on its recorded test split, or on a whole dataset.

    Parameters
    ----------
    run_dir : str or Path
        A training run (``config.json``, ``splits.json`` and the model(s) at its top level).
    kind, path : str, optional
        A dataset (:data:`trainer.datasets.DATASET_KINDS`) to evaluate on instead, whole.
    label_mode : str, optional
        Emotify label mode for ``kind="emotify"`` (default: the run's).
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    task = config["task"]
    models = load_models(run_dir, device="cpu")
    if kind is None:
        dataset = recorded_split(read_splits(run_dir / "splits.json"), "test")
        source = f"test split of {run_dir}"
    else:
        dataset = load_dataset(kind, path, task, label_mode=label_mode or config.get(
            "label_mode", "dominant"))
        source = dataset.name
    metrics = evaluate_models(models, task, [e.path for e in dataset.examples],
                              dataset.targets(), dataset.labels, dataset.multi_label,
                              progress=progress)
    metrics["evaluated_on"] = source
    return metrics


def format_metrics(metrics: dict) -> str:
    """A few human lines: headline numbers, then per-class or per-label figures."""
    lines = [f"{metrics.get('task', '?')} on {metrics.get('evaluated_on', 'held-out tracks')}: "
             f"{metrics['tracks']} tracks"]
    if "accuracy" in metrics:
        lines.append(f"accuracy {metrics['accuracy']:.3f}  "
                     f"balanced accuracy {metrics['balanced_accuracy']:.3f}")
        lines += [f"  recall {label:<24} {r:.3f}"
                  for label, r in metrics["per_class_recall"].items()]
    if "micro_f1" in metrics:
        def num(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"
        lines.append(f"threshold {metrics['threshold']:.2f}  micro F1 {num(metrics['micro_f1'])}"
                     f"  macro F1 {num(metrics['macro_f1'])}  micro ROC-AUC "
                     f"{num(metrics['micro_roc_auc'])}  macro ROC-AUC "
                     f"{num(metrics['macro_roc_auc'])}")
        for label, m in metrics["per_label"].items():
            lines.append(f"  {label:<24} P {m['precision']:.3f} R {m['recall']:.3f} "
                         f"F1 {m['f1']:.3f} AUC {num(m['roc_auc'])} (n={m['support']})")
    return "\n".join(lines)
