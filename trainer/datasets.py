"""Labelled music collections as lists of (audio path, labels, group).

Four public layouts are read:

* ``gtzan``: one folder per label (``blues/blues.00000.wav``); single-label. GTZAN has no
  artist information, so the group is the track itself.
* ``emotify``: audio files in genre folders (``classical/1.mp3``, ``rock/101.mp3`` or
  ``rock/1.mp3``) plus ``data.csv`` with one row per listener and a 0/1 column per GEMS-9
  emotion. Task ``emotion`` labels a track with its most-voted emotion (``dominant``) or, for each
  emotion, whether its share of votes is above that emotion's median share (``binary``,
  multi-label); task ``genre`` uses the genre folder.
* ``4q``: ``Q1/..Q4/<song>.<ext>`` plus ``metadata.csv`` (song, artist, title, quadrant,
  genres, moods). Task ``emotion``: the quadrant as a word; task ``genre``: the AllMusic genres
  (multi-label). The group is the artist.
* ``csv``: a manifest ``path,labels[,group]`` with labels split by ``;`` and paths relative to
  the manifest's folder.

Nothing here decodes audio: readers only find files, so reading a dataset is cheap.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tagger.audio import find_audio

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_KINDS",
    "GEMS9",
    "QUADRANT_WORDS",
    "Dataset",
    "DatasetError",
    "Example",
    "drop_rare_labels",
    "load_dataset",
    "read_4q",
    "read_csv_manifest",
    "read_emotify",
    "read_folders",
]

DATASET_KINDS = ("gtzan", "emotify", "4q", "csv")
TASKS = ("genre", "emotion")
LABEL_MODES = ("dominant", "binary")
# Emotify's GEMS-9 columns, in the order of its data.csv (ties in ``dominant`` go to the first).
GEMS9 = ("amazement", "solemnity", "tenderness", "nostalgia", "calmness", "power",
         "joyful_activation", "tension", "sadness")
# Russell quadrants of 4Q, as readable mood words (README of the data set).
QUADRANT_WORDS = {"Q1": "happy", "Q2": "tense", "Q3": "sad", "Q4": "calm"}


class DatasetError(Exception):
    """A dataset that cannot be read as the layout it was named as (one-line reason)."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One audio file, its labels and its split group (artist when known, else the track)."""

    path: Path
    labels: tuple[str, ...]
    group: str


@dataclasses.dataclass
class Dataset:
    """Examples with a fixed label order.

    Attributes
    ----------
    name : str
        Where it came from, e.g. ``"4q:/data/4q"``.
    task : {"genre", "emotion"}
    labels : tuple of str
        The label set, in output order.
    examples : list of Example
        Every example's labels are drawn from ``labels``; an example may have none (an
        all-negative example of a multi-label set).
    multi_label : bool
        Whether an example may carry several labels (sigmoid targets) or exactly one.
    """

    name: str
    task: str
    labels: tuple[str, ...]
    examples: list[Example]
    multi_label: bool

    def __len__(self) -> int:
        return len(self.examples)

    def targets(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Multi-hot (one-hot for single-label sets) targets ``[n, n_labels]``, float32."""
        chosen = self.examples if indices is None else [self.examples[i] for i in indices]
        column = {label: j for j, label in enumerate(self.labels)}
        out = np.zeros((len(chosen), len(self.labels)), dtype=np.float32)
        for i, example in enumerate(chosen):
            out[i, [column[label] for label in example.labels]] = 1.0
        return out

    def label_counts(self) -> dict[str, int]:
        """Examples per label, in label order."""
        counts = collections.Counter(label for e in self.examples for label in e.labels)
        return {label: counts[label] for label in self.labels}


def _make(name: str, task: str, examples: list[Example], multi_label: bool,
          labels: Iterable[str] | None = None) -> Dataset:
    """A :class:`Dataset` whose label order is ``labels`` or else the sorted label set."""
    if not examples:
        raise DatasetError(f"{name}: no labelled audio files found")
    seen = {label for e in examples for label in e.labels}
    order = tuple(label for label in labels if label in seen) if labels else tuple(sorted(seen))
    if not order:
        raise DatasetError(f"{name}: no example has a label")
    return Dataset(name, task, order, examples, multi_label)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; expected one of {TASKS}")


def _audio_index(root: Path) -> list[Path]:
    files = list(find_audio([root]))
    if not files:
        raise DatasetError(f"no audio files under {root}")
    return files


# --------------------------------------------------------------------------- folder per label


def read_folders(root: str | Path, task: str = "genre") -> Dataset:
    """GTZAN layout: every audio file below ``root/<label>/`` is labelled ``<label>``.

    Single-label. The group is the track (``<label>/<stem>``): GTZAN names no artists, so a split
    can only keep each track, not each artist, on one side.
    """
    _check_task(task)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"no such folder: {root}")
    examples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in find_audio([folder]):
            group = path.relative_to(root).with_suffix("").as_posix()
            examples.append(Example(path, (folder.name,), group))
    return _make(f"gtzan:{root}", task, examples, multi_label=False)


# --------------------------------------------------------------------------- Emotify


def _normalise_header(name: str) -> str:
    """``" Joyful activation "`` -> ``"joyful_activation"``."""
    return re.sub(r"\s+", "_", name.strip().lower())


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    """Rows of a CSV with normalised header names and stripped values."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [_normalise_header(h) for h in next(reader)]
        except StopIteration:
            raise DatasetError(f"{csv_path}: empty file") from None
        return [dict(zip(header, (v.strip() for v in row))) for row in reader if any(row)]


def _emotify_votes(rows: list[dict[str, str]], csv_path: Path) -> tuple[dict[int, str],
                                                                          dict[int, np.ndarray]]:
    """Genre and summed GEMS-9 votes per track id, and the number of raters per track."""
    missing = [c for c in ("track_id", "genre", *GEMS9) if c not in rows[0]]
    if missing:
        raise DatasetError(f"{csv_path}: missing columns {missing}")
    genres: dict[int, str] = {}
    votes: dict[int, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        try:
            track = int(float(row["track_id"]))
            flags = np.array([float(row[c] or 0) for c in GEMS9])
        except ValueError as err:
            raise DatasetError(f"{csv_path}:{line}: {err}") from None
        genres[track] = row["genre"].strip().lower()
        # one extra column counts raters, so shares are votes / raters
        votes[track] = votes.get(track, np.zeros(len(GEMS9) + 1)) + np.append(flags, 1.0)
    return genres, votes


def _find_emotify_file(track: int, genre: str, offset: int,
                       by_folder: dict[tuple[str, int], Path],
                       by_number: dict[int, list[Path]]) -> Path | None:
    """The audio of ``track``: ``genre/<id>``, ``genre/<id - offset>`` (numbered within the
    genre folder), or the only file named ``<id>`` anywhere."""
    for number in (track, track - offset):
        if (genre, number) in by_folder:
            return by_folder[(genre, number)]
    anywhere = by_number.get(track, [])
    return anywhere[0] if len(anywhere) == 1 else None


def read_emotify(root: str | Path, task: str = "emotion", label_mode: str = "dominant",
                 csv_path: str | Path | None = None) -> Dataset:
    """Emotify: genre folders of numbered audio files and the per-listener ``data.csv``.

    Parameters
    ----------
    root : str or Path
        Folder holding the genre folders (and ``data.csv``, found anywhere below it unless
        ``csv_path`` is given).
    task : {"emotion", "genre"}
        ``genre`` labels a track with its genre folder (4 labels).
    label_mode : {"dominant", "binary"}
        ``dominant``: the most-voted emotion (single-label; ties go to the first in
        :data:`GEMS9`). ``binary``: every emotion whose share of the track's raters is above that
        emotion's median share over all tracks (multi-label; a track may have none).

    Group: the track (Emotify names no artists).
    """
    _check_task(task)
    if label_mode not in LABEL_MODES:
        raise DatasetError(f"unknown label mode {label_mode!r}; expected one of {LABEL_MODES}")
    root = Path(root)
    if csv_path is None:
        found = sorted(root.rglob("data.csv"))
        if not found:
            raise DatasetError(f"no data.csv under {root}")
        csv_path = found[0]
    csv_path = Path(csv_path)
    rows = _read_rows(csv_path)
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    genres, votes = _emotify_votes(rows, csv_path)

    by_folder: dict[tuple[str, int], Path] = {}
    by_number: dict[int, list[Path]] = collections.defaultdict(list)
    for path in _audio_index(root):
        if path.stem.isdigit():
            by_folder[(path.parent.name.lower(), int(path.stem))] = path
            by_number[int(path.stem)].append(path)
    # ids run on across genres (rock 101-200): a folder numbered from 1 is offset by its first id
    first_id = {g: min(t for t, tg in genres.items() if tg == g) for g in set(genres.values())}

    tracks = sorted(votes)
    shares = np.stack([votes[t][:-1] / votes[t][-1] for t in tracks])
    medians = np.median(shares, axis=0)
    examples = []
    for track, share in zip(tracks, shares):
        genre = genres[track]
        path = _find_emotify_file(track, genre, first_id[genre] - 1, by_folder, by_number)
        if path is None:
            log.warning("emotify: no audio file for track %d (%s); skipped", track, genre)
            continue
        if task == "genre":
            labels: tuple[str, ...] = (genre,)
        elif label_mode == "dominant":
            labels = (GEMS9[int(np.argmax(share))],)
        else:
            labels = tuple(e for e, s, m in zip(GEMS9, share, medians) if s > m)
        examples.append(Example(path, labels, f"emotify:{track}"))
    multi = task == "emotion" and label_mode == "binary"
    return _make(f"emotify:{root}", task, examples, multi_label=multi,
                 labels=GEMS9 if task == "emotion" else None)


# --------------------------------------------------------------------------- 4Q


def read_4q(root: str | Path, task: str = "emotion") -> Dataset:
    """The 4Q emotion dataset: ``Q1/..Q4/<song>.<ext>`` and ``metadata.csv``.

    Task ``emotion``: the quadrant as a word (:data:`QUADRANT_WORDS`), single-label. Task
    ``genre``: the AllMusic genres of the ``genres`` column (split by ``;``), spelled as in the
    CSV, multi-label. The group is the artist, so no artist lands on two sides of a split.
    """
    _check_task(task)
    root = Path(root)
    csv_path = root / "metadata.csv"
    if not csv_path.is_file():
        raise DatasetError(f"no metadata.csv in {root}")
    rows = _read_rows(csv_path)
    missing = [c for c in ("song", "artist", "quadrant", "genres") if rows and c not in rows[0]]
    if missing or not rows:
        raise DatasetError(f"{csv_path}: missing columns {missing or 'and rows'}")
    by_place: dict[tuple[str, str], Path] = {}
    by_stem: dict[str, list[Path]] = collections.defaultdict(list)
    for path in _audio_index(root):
        by_place[(path.parent.name.upper(), path.stem)] = path
        by_stem[path.stem].append(path)
    examples = []
    for row in rows:
        song, quadrant = row["song"], row["quadrant"].upper()
        if quadrant not in QUADRANT_WORDS:
            log.warning("4q: song %s has unknown quadrant %r; skipped", song, row["quadrant"])
            continue
        path = by_place.get((quadrant, song))
        if path is None and len(by_stem.get(song, [])) == 1:
            path = by_stem[song][0]
        if path is None:
            log.warning("4q: no audio file for song %s; skipped", song)
            continue
        if task == "emotion":
            labels: tuple[str, ...] = (QUADRANT_WORDS[quadrant],)
        else:
            labels = tuple(dict.fromkeys(g.strip() for g in row["genres"].split(";") if g.strip()))
        artist = row["artist"].strip()
        examples.append(Example(path, labels, f"artist:{artist.casefold()}" if artist
                                else f"4q:{song}"))
    return _make(f"4q:{root}", task, examples, multi_label=task == "genre",
                 labels=QUADRANT_WORDS.values() if task == "emotion" else None)


# --------------------------------------------------------------------------- CSV manifest


def read_csv_manifest(csv_path: str | Path, task: str = "genre") -> Dataset:
    """A manifest with columns ``path,labels[,group]`` (header optional).

    Labels are split by ``;``; paths are relative to the manifest's folder (or absolute); the
    group defaults to the path. The set is multi-label when any row has several labels or none.
    """
    _check_task(task)
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"no such manifest: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = [[v.strip() for v in row] for row in csv.reader(f) if any(v.strip() for v in row)]
    if rows and _normalise_header(rows[0][0]) == "path":
        rows = rows[1:]
    examples = []
    for line, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DatasetError(f"{csv_path}:{line}: expected path,labels[,group]")
        path = Path(row[0]) if Path(row[0]).is_absolute() else csv_path.parent / row[0]
        if not path.is_file():
            log.warning("manifest: no such file %s; skipped", path)
            continue
        labels = tuple(dict.fromkeys(x.strip() for x in row[1].split(";") if x.strip()))
        group = row[2] if len(row) > 2 and row[2] else f"path:{row[0]}"
        examples.append(Example(path, labels, group))
    multi = any(len(e.labels) != 1 for e in examples)
    return _make(f"csv:{csv_path}", task, examples, multi_label=multi)


# --------------------------------------------------------------------------- all readers


def drop_rare_labels(dataset: Dataset, min_count: int) -> Dataset:
    """Leave out labels with fewer than ``min_count`` examples.

    In a multi-label set the examples stay: one left without labels is kept as an all-negative
    example (it still teaches every remaining label what it is not). In a single-label set an
    example needs its one label, so examples of dropped labels go.
    """
    counts = dataset.label_counts()
    kept = tuple(label for label in dataset.labels if counts[label] >= min_count)
    dropped = [label for label in dataset.labels if label not in kept]
    if not dropped:
        return dataset
    log.info("min_count %d drops labels %s", min_count, dropped)
    keep = set(kept)
    examples = [
        dataclasses.replace(e, labels=tuple(x for x in e.labels if x in keep))
        for e in dataset.examples
        if dataset.multi_label or e.labels[0] in keep
    ]
    return _make(dataset.name, dataset.task, examples, dataset.multi_label, labels=kept)


def load_dataset(kind: str, path: str | Path, task: str, min_count: int = 1,
                 label_mode: str = "dominant") -> Dataset:
    """Read a dataset of one of :data:`DATASET_KINDS` and drop labels rarer than ``min_count``."""
    if kind == "gtzan":
        dataset = read_folders(path, task)
    elif kind == "emotify":
        dataset = read_emotify(path, task, label_mode)
    elif kind == "4q":
        dataset = read_4q(path, task)
    elif kind == "csv":
        dataset = read_csv_manifest(path, task)
    else:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {DATASET_KINDS}")
    return drop_rare_labels(dataset, min_count) if min_count > 1 else dataset
