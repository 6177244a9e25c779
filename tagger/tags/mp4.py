"""MP4 (m4a): the ``ilst`` atom.

Genres go to ``©gen`` (a text list; mutagen reads a legacy numeric ``gnre`` atom as ``©gen``
too and writes it back as text) and the mood to the iTunes freeform atom
``----:com.apple.iTunes:MOOD`` as UTF-8, the names Picard and Navidrome use.
"""

from __future__ import annotations

from mutagen import FileType
from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm

from .common import TagBlock
from .plan import FileTags

__all__ = ["KINDS", "MP4Container", "load"]

KINDS: tuple[type[FileType], ...] = (MP4,)
GENRE = "\xa9gen"
MOOD = "----:com.apple.iTunes:MOOD"


class MP4Container(TagBlock):
    """An m4a file's ``ilst`` (see :class:`.contract.Container`)."""

    genre_key = GENRE

    def read(self) -> FileTags:
        """The genres and the mood stored in the file's ``ilst``."""
        tags = self.file.tags
        genres = [v for v in tags.get(GENRE, []) if v]
        # Freeform atoms are bytes; other taggers may have written non-UTF-8 text, which still
        # counts as "a mood is there".
        moods = (bytes(v).decode("utf-8", "replace") for v in tags.get(MOOD, []))
        return FileTags(genres, next((v for v in moods if v), None))

    def set_mood(self, mood: str) -> None:
        """Replace the mood (in memory)."""
        self.file.tags[MOOD] = [MP4FreeForm(mood.encode("utf-8"), dataformat=AtomDataType.UTF8)]

    def tag_others(self) -> list[str]:
        """A normalized dump of every atom in ``ilst`` that is not ours (cover bytes included)."""
        tags = self.file.tags
        return [f"{key}={tags[key]!r}" for key in sorted(tags.keys()) if key not in (GENRE, MOOD)]


load = MP4Container.open
