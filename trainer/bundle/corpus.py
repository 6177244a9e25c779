"""The training corpus of the default models: 4Q clips and GTZAN classical excerpts.

4Q gives both tasks (mood: its quadrant; genre: its AllMusic genres). The GTZAN excerpts are
extra positives for "Classical" (negatives for every other genre, no mood). GTZAN names no
artist; its classical folder runs piece by piece, so blocks of :data:`GTZAN_BLOCK` consecutive
files are the groups, the first :data:`GTZAN_TRAIN` files go to the training side and the rest
to the test split, never to both.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datasets import Dataset, Example, read_4q, read_folders
from ..features_cache import ClipSpec, FeatureCache, OnnxBackbone
from ..splits import split_by_group

log = logging.getLogger(__name__)

__all__ = ["CLASSICAL", "Corpus", "GTZAN_BLOCK", "GTZAN_TRAIN", "Index", "Part", "corpus_index",
           "load_corpus"]

CLASSICAL = "Classical"
GTZAN_BLOCK = 10
GTZAN_TRAIN = 60
FRACTIONS = (0.65, 0.10, 0.25)  # a quarter for test: enough positives per label to judge it


@dataclasses.dataclass
class Part:
    """Tracks of one split: clip embeddings, targets, groups and paths."""

    clips: list[np.ndarray]
    genres: np.ndarray  # multi-hot [n, n_genres]
    mood: np.ndarray  # class index, -1 for tracks without a mood (GTZAN)
    groups: np.ndarray
    paths: list[str]
    source: np.ndarray  # "4q" or "gtzan"

    def where(self, mask: np.ndarray) -> Part:
        idx = np.flatnonzero(mask)
        return Part([self.clips[i] for i in idx], self.genres[idx], self.mood[idx],
                    self.groups[idx], [self.paths[i] for i in idx], self.source[idx])

    def __add__(self, other: Part) -> Part:
        return Part(self.clips + other.clips, np.concatenate([self.genres, other.genres]),
                    np.concatenate([self.mood, other.mood]),
                    np.concatenate([self.groups, other.groups]), self.paths + other.paths,
                    np.concatenate([self.source, other.source]))

    @property
    def with_mood(self) -> Part:
        return self.where(self.mood >= 0)


@dataclasses.dataclass
class Corpus:
    """Genre labels (AllMusic spelling, Classical last), mood labels and the three splits."""

    genres: list[str]
    moods: list[str]
    train: Part
    validation: Part
    test: Part
    counts: dict[str, int]


def _embed(paths: Sequence[Path], spec: ClipSpec, backbone: OnnxBackbone,
           cache: FeatureCache, what: str) -> list[np.ndarray]:
    clips, kept = cache.extract(paths, spec, backbone, desc=what)
    if len(kept) != len(paths):
        raise RuntimeError(f"{what}: {len(paths) - len(kept)} files could not be read")
    return clips


@dataclasses.dataclass
class Index:
    """Paths, targets and groups of every track, and the split, before any embedding."""

    genres: list[str]
    moods: list[str]
    parts: dict[str, Part]  # train / validation / test, with empty clip lists
    counts: dict[str, int]


def corpus_index(q4: Path, gtzan: Path, min_count: int = 20, seed: int = 0) -> Index:
    """The tracks of 4Q (artist-disjoint, balanced over genres and moods) and of the GTZAN
    classical folder (by blocks of consecutive files), split; deterministic for a seed.

    Genres with fewer than ``min_count`` 4Q tracks are dropped as labels (their tracks stay,
    as negatives); Classical is kept whatever its 4Q count, with GTZAN's positives.
    """
    emo, gen = read_4q(q4, "emotion"), read_4q(q4, "genre")
    joint = Dataset("4q", "genre", tuple(gen.labels) + tuple(f"mood:{m}" for m in emo.labels),
                    [Example(g.path, g.labels + (f"mood:{e.labels[0]}",), g.group)
                     for g, e in zip(gen.examples, emo.examples)], True)
    splits = split_by_group(joint, FRACTIONS, seed=seed)
    targets = gen.targets()
    counts = dict(zip(gen.labels, targets.sum(axis=0).astype(int).tolist()))
    keep = [l for l in gen.labels if counts[l] >= min_count and l != CLASSICAL] + [CLASSICAL]
    y4 = np.stack([targets[:, gen.labels.index(l)] if l in gen.labels
                   else np.zeros(len(gen)) for l in keep], axis=1)
    moods = list(emo.labels)
    q4_all = Part([np.empty(0)] * len(emo), y4,
                  np.array([moods.index(e.labels[0]) for e in emo.examples]),
                  np.array([e.group for e in emo.examples]),
                  [str(e.path) for e in emo.examples], np.array(["4q"] * len(emo)))
    gpaths = sorted(e.path for e in read_folders(gtzan, "genre").examples)
    yg = np.zeros((len(gpaths), len(keep)))
    yg[:, -1] = 1
    g_all = Part([np.empty(0)] * len(gpaths), yg, np.full(len(gpaths), -1),
                 np.array([f"gtzan:{i // GTZAN_BLOCK}" for i in range(len(gpaths))]),
                 [str(p) for p in gpaths], np.array(["gtzan"] * len(gpaths)))
    first = np.arange(len(gpaths)) < GTZAN_TRAIN

    def part(idx: list[int]) -> Part:
        mask = np.zeros(len(emo), bool)
        mask[idx] = True
        return q4_all.where(mask)

    counts[CLASSICAL + " (GTZAN)"] = len(gpaths)
    parts = {"train": part(splits.train) + g_all.where(first),
             "validation": part(splits.validation), "test": part(splits.test) + g_all.where(~first)}
    return Index(keep, moods, parts, counts)


def load_corpus(q4: Path, gtzan: Path, spec: ClipSpec, backbone: OnnxBackbone,
                cache: FeatureCache, min_count: int = 20, seed: int = 0) -> Corpus:
    """:func:`corpus_index` with every track's clip embeddings."""
    index = corpus_index(q4, gtzan, min_count, seed)
    for name, part in index.parts.items():
        part.clips = _embed([Path(p) for p in part.paths], spec, backbone, cache, name)
    return Corpus(index.genres, index.moods, index.parts["train"], index.parts["validation"],
                  index.parts["test"], index.counts)
