"""The labelled tracks ``genreml learn`` learns from: their labels, groups and embeddings.

Runtime code only (no scikit-learn). A front door reads each track's :class:`Truth` (from
the file's tags with :func:`read_truth` and takes genreml's own values out with
:func:`without_own`, or from a beets item with :func:`truth_of_item`), and has every labelled
track's clip embeddings found in the cache or analysed (:func:`embedding_of`,
:func:`embeddings_of`); :func:`build_examples` then makes the labels canonical and puts
everything together.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..labels import GenreTree, Vocabulary, fold, split_values
from ..result import ClipEmbeddings

__all__ = ["Examples", "LabelSource", "Truth", "build_examples", "embedding_of",
           "embeddings_of", "labelled", "read_truth", "truth_of_item", "without_own"]

# how a track is grouped for cross-validation, in order: one artist's tracks stay together
GROUP_FIELDS = ("artist", "albumartist", "album")


@dataclasses.dataclass(frozen=True)
class LabelSource:
    """Where a task's labels are read and how they are made canonical.

    Attributes
    ----------
    task : {"genre", "emotion"}
        The head's task (``genreml learn --task mood`` is ``emotion``).
    field : str, optional
        Another tag to read (``STYLE``, ``TXXX:STYLE``); default genreml's own field.
    separators : tuple of str
        Split a value that holds several labels on these (``"Rock; Pop"``).
    aliases : mapping, optional
        Label to canonical label.
    tree, depth
        Roll genres up a genre tree to this depth (:class:`tagger.labels.Vocabulary`).
    """

    task: str = "genre"
    field: str | None = None
    separators: tuple[str, ...] = (";",)
    aliases: Mapping[str, str] | None = None
    tree: GenreTree | None = None
    depth: int | None = None


@dataclasses.dataclass
class Truth:
    """One track's labels as the library holds them (split, genreml's own taken out)."""

    path: str
    values: list[str]
    group: str
    own: int = 0  # values taken out as genreml's own


def read_truth(path: str | os.PathLike[str], source: LabelSource) -> Truth:
    """A file's labels for ``source`` and its group (artist, else album artist, else album,
    else its folder), read from its tags.

    Raises
    ------
    tagger.tags.TagError
        The file's tags cannot be read.
    """
    from ..tags.fields import read_fields
    from ..tags.writer import read_tags

    names = list(GROUP_FIELDS) + ([source.field] if source.field else [])
    fields = read_fields(path, names)
    if source.field:
        raw = fields[source.field]
    else:
        tags = read_tags(path)
        raw = tags.genres if source.task == "genre" else [tags.mood] if tags.mood else []
    values = [v for value in raw for v in split_values(value, source.separators)]
    group = _group({name: (fields[name] or [""])[0] for name in GROUP_FIELDS}, path)
    return Truth(os.fspath(path), values, group)


class Item(Protocol):
    """What :func:`truth_of_item` needs of a beets item."""

    def get(self, key: str, default: Any = None) -> Any: ...


def truth_of_item(item: Item, source: LabelSource) -> Truth:
    """A beets item's labels for ``source`` (its ``genres``, or its ``mood``; or
    ``source.field``), without the values genreml wrote there itself
    (:func:`tagger.beetsfields.written_record`), and its group as :func:`read_truth` makes it.

    Parameters
    ----------
    item : beets.library.Item
        Anything with beets' ``get``; ``path`` is the file's (bytes or str).
    source : LabelSource
        The task, and how a value holding several labels is split.

    Returns
    -------
    Truth
        ``path`` is the item's path as a string.
    """
    from ..beetsfields import written_record

    path = os.fsdecode(item.get("path"))
    if source.field:
        raw = item.get(source.field)
    else:
        raw = item.get("genres") if source.task == "genre" else item.get("mood")
    raw = [raw] if isinstance(raw, str) else list(raw or [])
    values = [v for value in raw for v in split_values(str(value), source.separators)]
    truth = Truth(path, values, _group({n: item.get(n) for n in GROUP_FIELDS}, path))
    return truth if source.field else without_own(truth, source.task, written_record(item))


def _group(first: Mapping[str, str | None], path: str | os.PathLike[str]) -> str:
    """A track's cross-validation group: the first of :data:`GROUP_FIELDS` with a value
    (``first``: each field's first value), else its folder."""
    return next((f"{name}:{fold(first[name])}" for name in GROUP_FIELDS
                 if first.get(name) and fold(first[name])),
                f"folder:{os.path.dirname(os.path.abspath(path))}")


def without_own(truth: Truth, task: str, written: Mapping[str, Any] | None) -> Truth:
    """``truth`` without the values genreml's own writes put there (``written``, as
    :meth:`tagger.cache.Cache.written` records it); a damaged record drops every value."""
    if not written:
        return truth
    if written.get("damaged"):
        return Truth(truth.path, [], truth.group, len(truth.values))
    ours = (written.get("genres") or []) if task == "genre" else [written.get("mood") or ""]
    theirs = {fold(v) for v in ours if v}
    kept = [v for v in truth.values if fold(v) not in theirs]
    return Truth(truth.path, kept, truth.group, truth.own + len(truth.values) - len(kept))


def embedding_of(tagger: Any, path: str | os.PathLike[str]) -> ClipEmbeddings:
    """The track's clip embeddings of ``tagger``'s backbone: from the cache, else analysed
    (and cached) now.

    Raises
    ------
    tagger.audio.AudioError, OSError
        The file cannot be analysed.
    """
    sha256 = tagger.models.backbone.identity.sha256
    stored = tagger.cache.embedding(path, sha256)
    if stored is not None:
        return stored.embeddings
    # results without embeddings (an older genreml's) must be analysed again
    result, _ = tagger.result_for(path, reanalyse=True)
    if result.embedding is not None:
        return result.embedding
    stored = tagger.cache.embedding(path, sha256)
    if stored is None:
        raise OSError(f"{os.fspath(path)}: no embeddings after the analysis")
    return stored.embeddings


def embeddings_of(tagger: Any, truths: Iterable[Truth],
                  failed: Callable[[str, Exception], None]) -> dict[str, ClipEmbeddings]:
    """Every labelled track's clip embeddings (:func:`embedding_of`), keyed by its path.

    Parameters
    ----------
    tagger : tagger.tagging.Tagger
        Its cache and models find or make the embeddings.
    truths : iterable of Truth
        The tracks; those without a value are skipped (nothing is learned from them).
    failed : callable
        Told ``(path, error)`` for a track that cannot be analysed; the others go on.

    Returns
    -------
    dict
    """
    out: dict[str, ClipEmbeddings] = {}
    for truth in labelled(truths):
        try:
            out[truth.path] = embedding_of(tagger, truth.path)
        except Exception as err:  # one broken file must not end a library-wide run
            failed(truth.path, err)
    return out


@dataclasses.dataclass
class Examples:
    """Labelled tracks with their clip embeddings, labels canonical."""

    task: str
    paths: list[str]
    labels: list[list[str]]
    groups: list[str]
    clips: list[np.ndarray]  # float16 [n_clips, dim] per track
    unlabelled: int = 0  # tracks read without a label (nothing learned from them)
    own_removed: int = 0  # labels left out because genreml wrote them

    @property
    def pooled(self) -> np.ndarray:
        """Each track's mean clip embedding, ``[n_tracks, dim]`` float32."""
        return np.stack([c.astype(np.float32).mean(axis=0) for c in self.clips])

    @property
    def vocabulary(self) -> list[str]:
        """Every label, most tracks first (ties: alphabetical)."""
        counts: dict[str, int] = {}
        for labels in self.labels:
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        return sorted(counts, key=lambda label: (-counts[label], fold(label)))


def build_examples(truths: Sequence[Truth], embeddings: Mapping[str, ClipEmbeddings],
                   source: LabelSource) -> Examples:
    """The examples of the tracks that have labels and embeddings, labels made canonical
    (a mood keeps only its first value: a track has one mood)."""
    vocabulary = Vocabulary.build(source.aliases, source.tree, source.depth,
                                  observed=(v for t in truths for v in t.values))
    out = Examples(source.task, [], [], [], [])
    for truth in truths:
        out.own_removed += truth.own
        labels = vocabulary.canonical_many(truth.values)
        if source.task != "genre":
            labels = labels[:1]
        if not labels:
            out.unlabelled += 1
            continue
        embedding = embeddings.get(truth.path)
        if embedding is None:  # its analysis failed (reported by the front door)
            continue
        out.paths.append(truth.path)
        out.labels.append(labels)
        out.groups.append(truth.group)
        out.clips.append(np.asarray(embedding.clips, dtype=np.float16))
    return out


def labelled(truths: Iterable[Truth]) -> list[Truth]:
    """The truths with at least one value: the tracks whose embeddings learning needs."""
    return [t for t in truths if t.values]
