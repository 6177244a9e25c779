"""MP4 (m4a): the ``ilst`` atom.

Genres go to ``©gen`` (a text list; mutagen reads a legacy numeric ``gnre`` atom as ``©gen``
too and writes it back as text) and the mood to the iTunes freeform atom
``----:com.apple.iTunes:MOOD`` as UTF-8, the names Picard and Navidrome use.
"""

from __future__ import annotations

from mutagen import FileType
from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm

from .common import load_with_tags as load

__all__ = ["KINDS", "load", "read", "set_genres", "set_mood", "others", "save"]

KINDS: tuple[type[FileType], ...] = (MP4,)
GENRE = "\xa9gen"
MOOD = "----:com.apple.iTunes:MOOD"


def read(f: FileType) -> tuple[list[str], str | None]:
    """The genres and the mood stored in ``f``'s ``ilst``."""
    genres = [v for v in f.tags.get(GENRE, []) if v]
    # Freeform atoms are bytes; other taggers may have written non-UTF-8 text, which still
    # counts as "a mood is there".
    moods = (bytes(v).decode("utf-8", "replace") for v in f.tags.get(MOOD, []))
    return genres, next((v for v in moods if v), None)


def set_genres(f: FileType, genres: list[str]) -> None:
    """Replace the genres of ``f`` (in memory)."""
    f.tags[GENRE] = list(genres)


def set_mood(f: FileType, mood: str) -> None:
    """Replace the mood of ``f`` (in memory)."""
    f.tags[MOOD] = [MP4FreeForm(mood.encode("utf-8"), dataformat=AtomDataType.UTF8)]


def others(f: FileType) -> list[str]:
    """A normalized dump of every atom in ``ilst`` that is not ours (cover bytes included)."""
    return [f"{key}={f.tags[key]!r}" for key in sorted(f.tags.keys()) if key not in (GENRE, MOOD)]


def save(f: FileType) -> None:
    """Write the ``ilst`` into ``f``'s file."""
    f.save()
