"""Train / validation / test splits by group: no track, and no artist, on two sides.

Groups (artist when known, else the track) are assigned whole. Each try walks the groups in a
seeded random order and gives each to the split that most lacks its labels (iterative
stratification, Sechidis et al. 2011), then scores how far every split's size and label counts
are from their targets; the best of several tries wins. The same seed gives the same split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .datasets import Dataset, Example

log = logging.getLogger(__name__)

__all__ = ["SPLIT_NAMES", "Splits", "leaked_groups", "read_splits", "recorded_split",
           "split_by_group", "write_splits"]

SPLIT_NAMES = ("train", "validation", "test")


@dataclasses.dataclass
class Splits:
    """Example indices per split, and how they were drawn."""

    train: list[int]
    validation: list[int]
    test: list[int]
    seed: int
    fractions: tuple[float, float, float]

    def __getitem__(self, name: str) -> list[int]:
        if name not in SPLIT_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def items(self) -> list[tuple[str, list[int]]]:
        return [(name, self[name]) for name in SPLIT_NAMES]


def _groups(dataset: Dataset) -> tuple[list[str], list[list[int]], np.ndarray]:
    """Group names, their example indices, and per-group label counts ``[n_groups, L + 1]``
    (last column: the number of examples)."""
    members: dict[str, list[int]] = {}
    for i, example in enumerate(dataset.examples):
        members.setdefault(example.group, []).append(i)
    names = list(members)
    targets = dataset.targets()
    counts = np.stack([
        np.append(targets[members[g]].sum(axis=0), len(members[g])) for g in names
    ])
    return names, [members[g] for g in names], counts


def _assign(counts: np.ndarray, goal: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Greedy stratified assignment of groups (in ``order``) to splits.

    Each group goes to the split with the largest unmet need for the group's labels, relative to
    each label's total so rare labels weigh as much as common ones; groups without labels go by
    size. Ties go to the split with the largest unmet size.
    """
    have = np.zeros_like(goal)
    where = np.empty(len(counts), dtype=int)
    total = np.maximum(goal.sum(axis=0), 1e-9)
    for g in order:
        present = counts[g, :-1] > 0
        size_need = (goal[:, -1] - have[:, -1]) / total[-1]
        if present.any():
            need = ((goal[:, :-1] - have[:, :-1])[:, present] / total[:-1][present]).sum(axis=1)
        else:
            need = size_need
        best = np.flatnonzero(np.isclose(need, need.max()))
        s = best[np.argmax(size_need[best])]
        where[g] = s
        have[s] += counts[g]
    return where


def _score(counts: np.ndarray, goal: np.ndarray, where: np.ndarray) -> float:
    """Distance of a split from its targets (lower is better): squared relative deviation of
    sizes and label counts, plus a large penalty for an empty split or a label missing from a
    split that should hold at least one of its examples."""
    have = np.stack([counts[where == s].sum(axis=0) for s in range(len(goal))])
    total = np.maximum(goal.sum(axis=0), 1.0)
    deviation = float((((have - goal) / total) ** 2).sum())
    missing = int(((goal >= 1.0) & (have == 0)).sum())
    return deviation + 10.0 * missing


def split_by_group(dataset: Dataset, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   seed: int = 0, tries: int = 64) -> Splits:
    """Split ``dataset`` into train / validation / test by group, label-balanced.

    Parameters
    ----------
    dataset : Dataset
    fractions : three floats
        Target share of examples per split (normalised to sum to 1).
    seed : int
        Seed of the group orders tried; the same seed gives the same split.
    tries : int
        Number of random group orders tried; the best balanced is kept.

    Raises
    ------
    ValueError
        With fewer groups than splits, or fractions that are not three positive numbers.
    """
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or (frac <= 0).any():
        raise ValueError(f"fractions must be three positive numbers, got {list(fractions)}")
    frac = frac / frac.sum()
    names, members, counts = _groups(dataset)
    if len(names) < 3:
        raise ValueError(f"{dataset.name}: {len(names)} groups cannot fill three splits")
    goal = frac[:, None] * counts.sum(axis=0)[None, :]
    rng = np.random.default_rng(seed)
    best_where, best_score = None, np.inf
    for _ in range(max(1, tries)):
        where = _assign(counts, goal, rng.permutation(len(names)))
        score = _score(counts, goal, where)
        if score < best_score:
            best_where, best_score = where, score
    parts = [sorted(i for g in np.flatnonzero(best_where == s) for i in members[g])
             for s in range(3)]
    log.info("split %s by %d groups: %s examples (score %.4f)", dataset.name, len(names),
             "/".join(str(len(p)) for p in parts), best_score)
    return Splits(parts[0], parts[1], parts[2], seed, tuple(float(f) for f in frac))


def leaked_groups(dataset: Dataset, splits: Splits) -> set[str]:
    """Groups found in more than one split (should be empty)."""
    seen: dict[str, str] = {}
    leaked = set()
    for name, indices in splits.items():
        for i in indices:
            group = dataset.examples[i].group
            if seen.setdefault(group, name) != name:
                leaked.add(group)
    return leaked


def write_splits(path: str | Path, dataset: Dataset, splits: Splits,
                 skipped: Sequence[str] = ()) -> Path:
    """Record a split as ``splits.json``: the paths of each split, plus every example's labels
    and group so a run can be re-evaluated without the dataset reader.

    ``skipped`` lists files that were assigned but could not be decoded.
    """
    path = Path(path)
    record = {
        "dataset": dataset.name,
        "task": dataset.task,
        "labels": list(dataset.labels),
        "multi_label": dataset.multi_label,
        "seed": splits.seed,
        "fractions": list(splits.fractions),
        **{name: [str(dataset.examples[i].path) for i in idx] for name, idx in splits.items()},
        "examples": {
            str(e.path): {"labels": list(e.labels), "group": e.group} for e in dataset.examples
        },
        "skipped": list(skipped),
    }
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return path


def read_splits(path: str | Path) -> dict:
    """The record written by :func:`write_splits`."""
    record = json.loads(Path(path).read_text())
    missing = [k for k in (*SPLIT_NAMES, "labels", "examples") if k not in record]
    if missing:
        raise ValueError(f"{path}: not a splits record (missing {missing})")
    return record


def recorded_split(record: dict, name: str) -> Dataset:
    """The examples of split ``name`` of a :func:`read_splits` record, as a dataset with the
    run's label order (some labels may have no example in it)."""
    examples = [Example(Path(p), tuple(record["examples"][p]["labels"]),
                        record["examples"][p]["group"]) for p in record[name]]
    return Dataset(f"{record.get('dataset', '?')} ({name})", record.get("task", "genre"),
                   tuple(record["labels"]), examples, bool(record.get("multi_label", False)))
