"""What ``genreml learn`` says about a head: a summary (JSON, also in the head's metadata),
a table for the terminal and a text file, and a PNG of per-label precision and recall."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

from .crossfit import Learned, Settings
from .examples import Examples

__all__ = ["draw", "summary", "table"]

TASK_NAMES = {"genre": "genre", "emotion": "mood"}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def summary(learned: Learned, examples: Examples, settings: Settings,
            learned_at: datetime, backbone: str) -> dict[str, Any]:
    """Everything the report shows, JSON-ready."""
    return {
        "task": TASK_NAMES[learned.task],
        "learned_at": learned_at.isoformat(timespec="seconds"),
        "backbone_sha256": backbone,
        "tracks": learned.tracks,
        "artists": learned.groups,
        "unlabelled_tracks": examples.unlabelled,
        "labels_written_by_genreml_left_out": examples.own_removed,
        "folds": learned.folds,
        "C": learned.C,
        "threshold": learned.threshold,
        "min_tracks": settings.min_tracks,
        "min_precision": settings.min_precision,
        "accuracy": _round(learned.accuracy),
        "accuracy_ci95": _round(learned.accuracy_ci),
        "learned": list(learned.labels),
        "labels": [{k: _round(v) for k, v in dataclasses.asdict(f).items()}
                   for f in learned.figures],
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(report: dict[str, Any]) -> list[str]:
    """The report as text lines: a header, one row per label, and the verdicts."""
    lines = [f"{report['task']} head, learned {report['learned_at']} from {report['tracks']} "
             f"tracks by {report['artists']} artists ({report['folds']}-fold cross-validation "
             f"grouped by artist; {report['unlabelled_tracks']} tracks without a label, "
             f"{report['labels_written_by_genreml_left_out']} labels genreml wrote left out)"]
    if report["accuracy"] is not None:
        lo, hi = report["accuracy_ci95"]
        lines.append(f"accuracy {report['accuracy']:.2f} [{lo:.2f}, {hi:.2f}] over every "
                     "labelled track (a mood not learned is always a miss)")
    width = max([len("label"), *(len(f["label"]) for f in report["labels"])])
    lines.append(f"{'label':<{width}}  tracks  artists  written  {'precision [95% CI]':<18}  "
                 "recall  F1    point  verdict")
    for f in report["labels"]:
        ci = f" [{f['precision_ci'][0]:.2f}, {f['precision_ci'][1]:.2f}]" \
            if f["precision_ci"] else ""
        verdict = "learned" if f["learned"] else f["reason"]
        lines.append(f"{f['label']:<{width}}  {f['tracks']:>6}  {f['groups']:>7}  "
                     f"{f['written']:>7}  {_cell(f['precision']) + ci:<18}  "
                     f"{_cell(f['recall']):>6}  {_cell(f['f1']):<4}  "
                     f"{_cell(f['point']):>5}  {verdict}")
    return lines


def draw(report: dict[str, Any], path: Path) -> None:
    """Per-label cross-validated precision and recall (95% intervals), the floor as a line.

    Raises
    ------
    ImportError
        matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f for f in report["labels"] if f["precision"] is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.6))
    x = np.arange(len(labels))
    for offset, key, colour in ((-0.2, "precision", "tab:blue"), (0.2, "recall", "tab:orange")):
        values = [f[key] for f in labels]
        cis = [f[f"{key}_ci"] or (v, v) for f, v in zip(labels, values)]
        err = np.array([[v - lo for v, (lo, _) in zip(values, cis)],
                        [hi - v for v, (_, hi) in zip(values, cis)]])
        ax.bar(x + offset, values, 0.4, yerr=err, label=key, color=colour, capsize=2)
    ax.axhline(report["min_precision"], color="grey", linestyle="--", linewidth=1,
               label="precision floor")
    ax.set_xticks(x, [f["label"] + ("" if f["learned"] else " (x)") for f in labels],
                  rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(f"{report['task']} head: cross-validated by artist, {report['tracks']} tracks")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
