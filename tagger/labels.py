"""Genre labels as a library carries them, made canonical in the user's own vocabulary.

``genreml learn`` learns from the genres a library's files already hold. Those come spelled
many ways (``Hip-Hop``, ``hip hop``, ``Hip_Hop``), joined into one value (``Rock; Pop``), and
at every level of detail (``Melodic Death Metal`` next to ``Metal``). This module turns them
into one label per genre:

* :func:`fold` is the comparison key; the spelling shown (the display form) is kept apart.
* :func:`split_values` splits a joined value on the user's separators only.
* :class:`Vocabulary` applies the user's aliases, then rolls a label up a genre tree to a
  chosen depth, and picks one display spelling per genre (the rule is on the class).
* :func:`load_tree` reads a genre tree: beets' ``genres-tree.yaml`` (its lastgenre plugin's)
  by default, or the user's own file in the same format.

The tree format (lastgenre's): nested YAML lists and mappings. A mapping key is a genre whose
children are its value (a list of further genres or mappings); a plain list item is a leaf::

    - rock:
        - heavy metal:
            - death metal:
                - melodic death metal

A genre's depth is its position on its path from the root: the top-level genres (``rock``)
are depth 1. A genre that appears in several branches (beets' tree has a few, e.g.
``industrial metal`` under both ``electronic > industrial`` and ``rock > heavy metal``) keeps
its first occurrence in file order, which is what lastgenre's ``find_parents`` answers too.
Runtime module: no heavy imports.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ALLMUSIC_SYNONYMS", "GenreTree", "Vocabulary", "default_tree_path", "fold", "load_tree",
           "split_values", "tree_from_data"]

# Spaces, hyphens (ASCII and the Unicode hyphens NFKC leaves) and underscores separate words
# alike in a fold: "Hip-Hop", "hip hop" and "Hip_Hop" are one genre.
# AllMusic's genre names -> the names of beets' lastgenre tree, which the bundled models use;
# names not listed are the same in both. A personal head learned from AllMusic-tagged files
# says "Rap" where the bundled head says "Hip Hop": one genre (tagger.personal.UnionHead).
ALLMUSIC_SYNONYMS = {
    "Pop/Rock": "Pop Rock",
    "Rap": "Hip Hop",
    "Stage & Screen": "Soundtrack",
    "International": "World Music",
    "Holiday": "Christmas Music",
    "Comedy/Spoken": "Spoken Word",
}

_WORD_GAP = re.compile(r"[\s\-_\u2010\u2011]+")
_SPACES = re.compile(r"\s+")


def fold(label: str) -> str:
    """The comparison key of a genre label.

    Parameters
    ----------
    label
        A label as written anywhere (a file, an alias map, a tree).

    Returns
    -------
    str
        NFKC-normalised and casefolded, runs of spaces, hyphens and underscores made one
        space, trimmed. Only for comparing: never shown.
    """
    # NFKC again after casefold: casefolding can produce characters NFKC would change.
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", label).casefold())
    return _WORD_GAP.sub(" ", text).strip()


def _tidy(label: str) -> str:
    """The display form of a label as written: trimmed, whitespace runs made one space."""
    return _SPACES.sub(" ", label).strip()


def split_values(value: str, separators: Sequence[str]) -> list[str]:
    """Split a value a file joined into one string into its labels.

    Parameters
    ----------
    value
        One stored value, e.g. ``"Rock; Pop"``.
    separators
        The user's separators (``[";", "/"]``). Only these split: ``"AC/DC"`` stays whole
        unless ``"/"`` is one of them.

    Returns
    -------
    list[str]
        The labels in order, trimmed, without empties, each genre once (by :func:`fold`; the
        first spelling is kept).

    Raises
    ------
    ValueError
        An empty separator.
    """
    if any(not sep for sep in separators):
        raise ValueError("a genre separator cannot be empty")
    parts = [value]
    if separators:
        # Longest first, so that "//" is not read as two "/" when both are separators.
        ordered = sorted(set(separators), key=len, reverse=True)
        parts = re.split("|".join(map(re.escape, ordered)), value)
    labels: list[str] = []
    seen: set[str] = set()
    for part in parts:
        label, key = _tidy(part), fold(part)
        if key and key not in seen:
            seen.add(key)
            labels.append(label)
    return labels


@dataclasses.dataclass(frozen=True)
class GenreTree:
    """A genre tree, flattened: each genre's path from the root.

    Attributes
    ----------
    paths
        Folded label to its path from the root, top-level genre first, the genre itself last,
        in the tree's own spellings. A genre in several branches has its first path in file
        order.
    """

    paths: Mapping[str, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and fold(label) in self.paths

    def path(self, label: str) -> tuple[str, ...] | None:
        """The path from the root to ``label`` (matched by :func:`fold`), None if absent."""
        return self.paths.get(fold(label))

    def ancestor(self, label: str, depth: int) -> str | None:
        """``label``'s ancestor at ``depth`` (1: its top-level genre), in the tree's spelling;
        the label itself (tree spelling) when it is not deeper than ``depth``; None when the
        tree does not know it."""
        path = self.path(label)
        if path is None:
            return None
        return path[min(depth, len(path)) - 1]


def _genre_name(node: Any) -> str:
    """A tree node's genre name, refusing what YAML read as another type."""
    if not isinstance(node, str):
        # YAML 1.1 reads `- yes` as True and `- 1990` as 1990: quoting keeps the genre's text.
        raise ValueError(f"genre tree: {node!r} is not a genre name (quote it in the YAML)")
    return node


def tree_from_data(data: Any) -> GenreTree:
    """Flatten a parsed genre tree (lastgenre's format, see the module docstring).

    Parameters
    ----------
    data
        What ``yaml.safe_load`` returned for a tree file: nested lists and mappings of genre
        names; None (an empty file) is an empty tree.

    Returns
    -------
    GenreTree
        Each genre's first path in file order (pre-order: a genre before its children).
        A key with no value (``soundtrack:``) is a genre without children; lastgenre reads it
        as having a child named ``None``.

    Raises
    ------
    ValueError
        A node that is not a string.
    """
    paths: dict[str, tuple[str, ...]] = {}

    def add(name: str, parent: tuple[str, ...]) -> tuple[str, ...]:
        path = (*parent, _tidy(name))
        key = fold(name)
        if key and key not in paths:  # first occurrence wins
            paths[key] = path
        return path

    def walk(node: Any, parent: tuple[str, ...]) -> None:
        if node is None:
            return
        if isinstance(node, Mapping):
            for name, children in node.items():
                walk(children, add(_genre_name(name), parent))
        elif isinstance(node, list):
            for child in node:
                walk(child, parent)
        else:
            add(_genre_name(node), parent)

    walk(data, ())
    return GenreTree(paths)


def default_tree_path() -> Path:
    """Where the installed beets keeps lastgenre's ``genres-tree.yaml``.

    Raises
    ------
    FileNotFoundError
        beets (or that file) is not installed.
    """
    try:
        # find_spec locates the package without running it: lastgenre's __init__ imports
        # pylast, which a genreml install need not have.
        spec = importlib.util.find_spec("beetsplug.lastgenre")
    except ImportError:
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "genres-tree.yaml"
        if path.is_file():
            return path
    raise FileNotFoundError("beets' genre tree (beetsplug/lastgenre/genres-tree.yaml) is not "
                            "installed: install beets or give a genre tree file")


def load_tree(path: Path | None = None) -> GenreTree:
    """Read a genre tree file.

    Parameters
    ----------
    path
        A YAML file in lastgenre's tree format; None: beets' shipped ``genres-tree.yaml``.

    Returns
    -------
    GenreTree
        The flattened tree (:func:`tree_from_data`).

    Raises
    ------
    FileNotFoundError
        No such file, or beets' tree is not installed.
    ValueError
        The file is not valid YAML or not a genre tree.
    """
    path = default_tree_path() if path is None else Path(path)
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    try:
        return tree_from_data(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The user's genre vocabulary: aliases, an optional roll-up, one spelling per genre.

    Use :meth:`build`. A label is made canonical in this order:

    1. Alias: a label whose fold is an alias's fold becomes that alias's target (one step:
       a target is not looked up again, so alias maps cannot loop). An empty target drops
       the label.
    2. Roll-up: with a tree and a depth, a label the tree knows becomes its ancestor at that
       depth (1: the top-level genre); one not deeper than the depth stays itself.
    3. Display spelling of the result, by its fold, deterministically: the spelling of an alias
       target (the user wrote it; the first in the alias map when several fold alike), else
       the library's most frequent spelling (ties: the first seen), else the tree's spelling
       (beets' tree is all lowercase, so the library's own ``Rock`` beats its ``rock``), else
       the label as given, trimmed.

    Labels neither aliased nor in the tree are kept, never dropped.

    Attributes
    ----------
    aliases
        Folded alias to its target's display spelling.
    tree, depth
        The roll-up; none when either is None.
    spellings
        Folded label to its display spelling from the alias targets and the library.
    """

    aliases: Mapping[str, str]
    tree: GenreTree | None = None
    depth: int | None = None
    spellings: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(cls, aliases: Mapping[str, str] | None = None, tree: GenreTree | None = None,
              depth: int | None = None, observed: Iterable[str] = ()) -> Vocabulary:
        """A vocabulary from the user's settings and the labels their library holds.

        Parameters
        ----------
        aliases
            Label to canonical label, e.g. ``{"hiphop": "Hip Hop", "Rap": "Hip Hop"}``.
        tree, depth
            Roll labels the tree knows up to their ancestor at ``depth`` (1 or more).
        observed
            Every label found in the library (already split), repeats included: their
            counts choose each genre's display spelling.

        Raises
        ------
        ValueError
            Two aliases that fold alike with different targets, a depth below 1, or a depth
            without a tree.
        """
        if depth is not None and tree is None:
            raise ValueError("a genre roll-up depth needs a genre tree")
        if depth is not None and depth < 1:
            raise ValueError(f"the genre roll-up depth is 1 or more, not {depth}")
        folded: dict[str, str] = {}
        for label, target in (aliases or {}).items():
            key, target = fold(label), _tidy(target)
            if key in folded and fold(folded[key]) != fold(target):
                raise ValueError(f"genre alias {label!r} is given twice, as {folded[key]!r} "
                                 f"and {target!r}")
            folded.setdefault(key, target)
        counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        for label in observed:
            if fold(label):
                counts[fold(label)][_tidy(label)] += 1
        # max() returns the first maximal key in insertion order: ties go to the first seen.
        spellings = {key: max(c, key=c.__getitem__) for key, c in counts.items()}
        for target in reversed(list(folded.values())):  # reversed: the first alias wins
            if fold(target):
                spellings[fold(target)] = target
        return cls(folded, tree, depth, spellings)

    def canonical(self, label: str) -> str | None:
        """The canonical label for ``label``; None for an empty label or one aliased to
        nothing."""
        name = _tidy(label)
        if not fold(name):
            return None
        name = self.aliases.get(fold(name), name)
        if not fold(name):
            return None
        path = self.tree.path(name) if self.tree is not None else None
        if path:
            # Without a depth, no roll-up: the tree's spelling still beats the label as given.
            name = path[min(self.depth or len(path), len(path)) - 1]
        return self.spellings.get(fold(name), name)

    def canonical_many(self, values: Iterable[str]) -> list[str]:
        """Each label made canonical, in order, each genre once, dropped ones left out."""
        result: list[str] = []
        seen: set[str] = set()
        for value in values:
            name = self.canonical(value)
            if name is not None and fold(name) not in seen:
                seen.add(fold(name))
                result.append(name)
        return result
