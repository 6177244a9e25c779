"""What the container modules share: opening a file with a tag block, the raw ID3v1 block
any file may end with, and the half of the :class:`.contract.Container` contract that is the
same for every container (:class:`TagBlock`)."""

from __future__ import annotations

import abc
import os
from typing import TYPE_CHECKING

from mutagen import FileType
from mutagen.id3._id3v1 import find_id3v1  # where mutagen's own save looks for the v1 block

if TYPE_CHECKING:
    from typing_extensions import Self

    from .contract import Options

__all__ = ["TagBlock", "load_with_tags", "v1_block"]


def load_with_tags(path: str, kind: type[FileType]) -> FileType:
    """Open ``path`` as ``kind``; a file without a tag block gets an empty one (a FLAC file
    without a comment block, an MP4 without ``ilst``; Ogg always has its comment header)."""
    f = kind(path)
    if f.tags is None:
        f.add_tags()
    return f


def v1_block(path: str) -> bytes:
    """The raw ID3v1 block at the end of ``path`` (``b""`` if there is none)."""
    with open(path, "rb") as f:
        tag, offset = find_id3v1(f)
        if tag is None or not offset:
            return b""
        f.seek(offset, os.SEEK_END)
        return f.read()


class TagBlock(abc.ABC):
    """An open file with what every container does alike: genres stored as predicted, the
    stream and ID3v1 part of :meth:`others`, mutagen's own save.

    A container module subclasses it with ``read``, ``set_genres``, ``set_mood`` and
    :meth:`tag_others` (the dump of its own tags that are not ours); :meth:`open` is its
    ``load`` unless it has options of its own.
    """

    def __init__(self, file: FileType) -> None:
        self.file = file

    @classmethod
    def open(cls, path: str, kind: type[FileType], options: Options) -> Self:
        """Open ``path``, a file of class ``kind``, with its (possibly empty) tag block: a
        container module's ``load`` where no option concerns it (they are ID3's)."""
        return cls(load_with_tags(path, kind))

    def normalize(self, genres: list[str]) -> list[str]:
        """Predicted genres as this container stores them: as they are."""
        return list(genres)

    #: The key of a mapping-like tag block that holds one value per genre (Vorbis, MP4).
    genre_key: str = ""

    def set_genres(self, genres: list[str]) -> None:
        """Replace the genres (in memory), one value each under :attr:`genre_key`; none
        removes the field (an empty one would read as an empty genre). ID3 overrides it."""
        if genres:
            self.file.tags[self.genre_key] = list(genres)
        elif self.genre_key in self.file.tags:
            del self.file.tags[self.genre_key]

    @abc.abstractmethod
    def tag_others(self) -> list[str]:
        """A normalized dump of every tag that is not ours (a subclass's part of others)."""

    def others(self) -> list[str]:
        """Everything verification compares: the stream, every tag that is not ours and the
        raw ID3v1 block some taggers append to any file."""
        info = self.file.info
        stream = repr((type(info).__name__, getattr(info, "sample_rate", None),
                       getattr(info, "channels", None), round(info.length, 3)))
        v1 = repr(("ID3v1", v1_block(self.file.filename)))
        return [stream, v1, *self.tag_others()]

    def save(self) -> None:
        """Write the tag block into the file."""
        self.file.save()
