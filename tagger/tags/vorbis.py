"""Vorbis comments: FLAC, Ogg Vorbis and Ogg Opus.

One ``GENRE`` field per genre and one ``MOOD`` field, the names Picard, beets and Navidrome
read. Field names are case-insensitive; existing fields are found in any case, ours are
written upper-case. Setting a field removes its old entries and appends the new ones at the
end, so every other comment keeps its relative order.
"""

from __future__ import annotations

from mutagen import FileType
from mutagen.flac import FLAC, Padding, VCFLACDict
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from .common import TagBlock
from .plan import FileTags

__all__ = ["KINDS", "VorbisContainer", "load"]

KINDS: tuple[type[FileType], ...] = (FLAC, OggVorbis, OggOpus)
GENRE = "GENRE"
MOOD = "MOOD"
# FLAC blocks the comment rewrite may legitimately change: the comment itself, and the
# padding that absorbs its growth. Everything else (stream info, pictures, seek table,
# cue sheet, application data) must come back byte-identical.
_REWRITTEN_BLOCKS = (VCFLACDict.code, Padding.code)


class VorbisContainer(TagBlock):
    """A FLAC, Ogg Vorbis or Ogg Opus file's comment (see :class:`.contract.Container`)."""

    genre_key = GENRE

    def read(self) -> FileTags:
        """The genres and the mood stored in the file's comment."""
        tags = self.file.tags
        genres = [v for v in tags.get(GENRE, []) if v]
        mood = next((v for v in tags.get(MOOD, []) if v), None)
        return FileTags(genres, mood)

    def set_mood(self, mood: str) -> None:
        """Replace the mood (in memory)."""
        self.file.tags[MOOD] = [mood]

    def tag_others(self) -> list[str]:
        """A normalized dump of every comment that is not ours, the vendor string and (FLAC)
        every other metadata block's bytes."""
        f = self.file
        ours = (GENRE, MOOD)
        dump = [repr(("vendor", f.tags.vendor))]
        dump += [repr((key, value)) for key, value in f.tags if key.upper() not in ours]
        for block in getattr(f, "metadata_blocks", ()):
            if block.code not in _REWRITTEN_BLOCKS:
                dump.append(repr((type(block).__name__, block.write())))
        return dump


load = VorbisContainer.open
