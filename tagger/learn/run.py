"""One learning run, the same for every front door: examples, cross-validation, the head
and its report saved side by side."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..model import ModelSet
from ..result import ClipEmbeddings
from .crossfit import Learned, Settings, fit_task
from .examples import LabelSource, Truth, build_examples
from .export import head_path, save_head, write_atomically
from .report import draw, summary, table

__all__ = ["Outcome", "genre_threshold", "learn", "settings_for"]


@dataclasses.dataclass
class Outcome:
    """What a learning run produced."""

    learned: Learned
    report: dict[str, Any]
    lines: list[str]
    head: Path | None  # None: no label earned its place, no head was written
    files: list[Path]  # the report's files

    @property
    def where(self) -> str:
        """One line saying where the head and the report are (a front door prints it)."""
        head = self.head or "no head written: no label earned its place"
        return f"head: {head}; report: {self.files[0].with_suffix('.*')}"


def genre_threshold(models: ModelSet, fallback: float = 0.5) -> float:
    """The written threshold of ``models``' genre head: a personal genre head decides at the
    same one, so that the two can be used together (:class:`tagger.personal.UnionHead`)."""
    for spec, _ in models.specs:
        if spec.task == "genre" and spec.threshold is not None:
            return spec.threshold
    return fallback


def settings_for(models: ModelSet, min_tracks: int = 10, min_precision: float = 0.7
                 ) -> Settings:
    """The learning settings a front door's options ask for, the genre threshold
    ``models``' (:func:`genre_threshold`).

    Raises
    ------
    ValueError
        ``min_precision`` outside (0, 1] or ``min_tracks`` under 2 (the message names the
        option: ``--min-precision``, ``--min-tracks``).
    """
    if not 0 < min_precision <= 1:
        raise ValueError("--min-precision must be in (0, 1]")
    if min_tracks < 2:
        raise ValueError("--min-tracks must be 2 or more")
    return Settings(min_tracks, min_precision, threshold=genre_threshold(models))


def learn(truths: Sequence[Truth], embeddings: Mapping[str, ClipEmbeddings],
          source: LabelSource, settings: Settings, models: ModelSet, folder: Path,
          name: str = "personal", now: datetime | None = None) -> Outcome:
    """Learn ``source.task`` from the tracks' labels and embeddings; write the head (when a
    label earned its place) and the report (always) into ``folder``.

    Raises
    ------
    tagger.learn.crossfit.LearnError
        Nothing to learn from (no labelled track, or a single artist).
    """
    examples = build_examples(truths, embeddings, source)
    learned = fit_task(examples, settings)
    learned_at = now or datetime.now(timezone.utc)
    report = summary(learned, examples, settings, learned_at,
                     models.backbone.identity.sha256)
    lines = table(report)
    base = head_path(folder, name, source.task).with_suffix("")
    text, data = base.with_suffix(".report.txt"), base.with_suffix(".report.json")
    write_atomically(text, ("\n".join(lines) + "\n").encode())
    write_atomically(data, json.dumps(report, indent=1).encode())
    files = [text, data]
    try:
        png = base.with_suffix(".report.png")
        draw(report, png)
        files.append(png)
    except ImportError:
        lines.append("(no PNG: matplotlib is not installed)")
    head = None
    if learned.estimator is not None:
        version = learned_at.strftime("%Y%m%d.%H%M%S")
        head = save_head(learned, models, folder, name, version, report)
    else:
        old = head_path(folder, name, source.task)
        if old.exists():  # the evidence now says no label is reliable: stop writing them
            old.unlink()
            lines.append(f"removed {old.name}: no label earned its place this time")
    return Outcome(learned, report, lines, head, files)
