"""The contract every tag container module keeps, written down as :class:`typing.Protocol` s.

mutagen gives each format a ``FileType`` with the same methods, so its callers load and save
any file alike. The container modules (:mod:`.id3`, :mod:`.vorbis`, :mod:`.mp4`) do the same
one level up: each has ``KINDS`` (the mutagen classes it handles) and ``load(path, kind,
options)``, which returns a :class:`Container`. :mod:`.container` picks the module by the
file's kind and never asks which one it got; the options only one container uses (ID3's
version and its v2.3 genre separator) travel to every ``load`` alike, in :class:`Options`.
``tests/test_tags_contract.py`` checks each module against :class:`ContainerModule` and what
it loads against :class:`Container`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

from mutagen import FileType

from .plan import FileTags

__all__ = ["V23_SEP", "Container", "ContainerModule", "Options"]

# Picard's v23_sep default: here, not in .id3, because Options (every container's) names it.
V23_SEP = "; "


@dataclasses.dataclass(frozen=True)
class Options:
    """How tags are read and written, given to every container; each uses what concerns it.

    Attributes
    ----------
    id3_version : {None, 3, 4}
        ID3 only: ``None`` keeps the file's own version; ``3`` or ``4`` converts.
    v23_sep : str
        ID3v2.3 only: the separator genres are joined with in ``TCON`` and split on.
    """

    id3_version: int | None = None
    v23_sep: str = V23_SEP


@runtime_checkable
class Container(Protocol):
    """One open file's tag block, and our two fields as its container stores them.

    Every setter works in memory; only :meth:`save` writes the file.
    """

    file: FileType  # the open mutagen file

    def read(self) -> FileTags:
        """The genres and the mood the tag block holds now."""

    def normalize(self, genres: list[str]) -> list[str]:
        """Predicted genres as this container stores them (an ID3v2.3 tag splits them)."""

    def set_genres(self, genres: list[str]) -> None:
        """Replace the genres (in memory); an empty list removes the field."""

    def set_mood(self, mood: str) -> None:
        """Replace the mood (in memory)."""

    def others(self) -> list[str]:
        """Everything verification compares: the stream, every tag that is not ours and the
        raw ID3v1 block some taggers append to any file."""

    def save(self) -> None:
        """Write the tag block into the file."""


@runtime_checkable
class ContainerModule(Protocol):
    """A container module: the mutagen classes it handles and how it opens one of them."""

    KINDS: tuple[type[FileType], ...]

    def load(self, path: str, kind: type[FileType], options: Options) -> Container:
        """Open ``path`` (of mutagen class ``kind``) with a (possibly empty) tag block."""
