"""ID3v2: mp3, and WAV / AIFF through their ``id3`` chunk.

Genres go to ``TCON`` and the mood to ``TMOO`` (ID3v2.4). ID3v2.3 has neither a mood frame
nor multi-value text, so in a v2.3 tag the mood goes to ``TXXX:MOOD`` (the field foobar2000,
Mp3tag and MediaMonkey use there) and the genres are joined with :data:`V23_SEP` (``"; "``,
Picard's recommendation and its ``v23_sep`` option) into one ``TCON`` string. Reading a v2.3
tag splits ``TCON`` on the same separator, so ``"Pop/Rock"`` stays one genre; a predicted
genre that itself holds the separator is split before planning
(:meth:`ID3Container.normalize`), so what is planned is what the file holds and a second run
finds nothing to do.

ID3v1 is never touched: tags are loaded without merging the v1 block into v2 (mutagen's
``load_v1=False``), so no v2 frame is made from it, and as no mutagen save option keeps the
v1 bytes as they are (it removes, rewrites or creates them), :meth:`ID3Container.save` puts
the file's original v1 block back after the save. A v1 genre still counts as the file's genre
where the v2 tag has none (:meth:`ID3Container.read`), as players show it.

Tags are loaded *untranslated*: mutagen's default load upgrades every frame to v2.4
(``TYER`` -> ``TDRC``, ``"(17)"`` -> ``"Rock"``, ...), which would rewrite frames nobody asked
us to touch. Loading raw and saving with the file's own version keeps them as they are; only
an explicit version change translates (:func:`load`).
"""

from __future__ import annotations

import dataclasses
import os

from mutagen import FileType
from mutagen.aiff import AIFF
from mutagen.id3 import ID3Tags, TCON, TMOO, TXXX, Encoding, Frame, ID3v1SaveOptions
from mutagen.id3._id3v1 import find_id3v1  # where mutagen's own save looks for the v1 block
from mutagen.mp3 import MP3
from mutagen.wave import WAVE

from .common import TagBlock, v1_block
from .contract import V23_SEP, Options
from .plan import FileTags

__all__ = ["KINDS", "V23_SEP", "ID3Container", "Target", "load"]

KINDS: tuple[type[FileType], ...] = (MP3, WAVE, AIFF)
MOOD_DESC = "MOOD"


@dataclasses.dataclass(frozen=True)
class Target:
    """How one file's ID3 tag is read and written.

    Attributes
    ----------
    version : {3, 4}
        The ID3v2 version the tag is saved as.
    sep : str
        The v2.3 genre separator.
    v1_genres : tuple of str
        The genre of the file's ID3v1 block, if any (read-only: never written).
    """

    version: int
    sep: str = V23_SEP
    v1_genres: tuple[str, ...] = ()


def _v1_genres(path: str) -> tuple[str, ...]:
    with open(path, "rb") as f:
        tag, _ = find_id3v1(f)
    frame = (tag or {}).get("TCON")
    return tuple(g for g in frame.genres if g) if frame is not None else ()


def load(path: str, kind: type[FileType], options: Options) -> ID3Container:
    """Open ``path`` with how its tag will be written.

    Parameters
    ----------
    path : str
        The audio file.
    kind : type
        Its mutagen class (``MP3``, ``WAVE`` or ``AIFF``).
    options : Options
        ``id3_version``: ``None`` keeps the file's own version (v2.3 stays v2.3); v2.2 and new
        tags (an ID3v1-only file gets one) become v2.4, the versions mutagen can write. ``3``
        or ``4`` converts. ``v23_sep``: the v2.3 genre separator.

    Returns
    -------
    ID3Container
        The file, with a (possibly empty) ID3v2 tag, and how it will be written.
    """
    version, sep = options.id3_version, options.v23_sep
    f = kind(path, translate=False, load_v1=False)
    v1 = _v1_genres(path) if kind is MP3 else ()
    if f.tags is None:
        f.add_tags()
        return ID3Container(f, Target(version or 4, sep, v1))
    have = f.tags.version[1] if f.tags.version[0] == 2 else 1
    target = version or (have if have in (3, 4) else 4)
    if have != target:
        _convert(f.tags, have, target, sep)
    return ID3Container(f, Target(target, sep, v1))


def _convert(tags: ID3Tags, have: int, target: int, sep: str) -> None:
    """Translate ``tags`` to ``target`` in memory, carrying our two fields across.

    mutagen's translation drops ``TMOO`` for v2.3 and leaves a v2.3 ``"a/b"`` genre string
    whole, so both fields are read in the source's terms and written again in the target's.
    """
    mood = _read_mood(tags)
    if target == 3:
        tags.update_to_v23()
        _v23_encodings(tags)
    else:
        tags.update_to_v24()  # also resolves ID3v1 / "(17)" genre numbers to names
    genres = _read_genres(tags, have, sep)
    if genres:
        _put_genres(tags, genres, target, sep)
    if mood:
        _put_mood(tags, mood, target)


def _v23_encodings(tags: ID3Tags) -> None:
    # Saving as v2.3 turns UTF-8 and UTF-16BE text into UTF-16 (v2.3 knows neither); doing it
    # here too makes the in-memory tag what the file will hold, which verification relies on.
    for frame in tags.values():
        if getattr(frame, "encoding", None) in (Encoding.UTF8, Encoding.UTF16BE):
            frame.encoding = Encoding.UTF16
        if hasattr(frame, "sub_frames"):  # CHAP, CTOC
            _v23_encodings(frame.sub_frames)


def _read_genres(tags: ID3Tags, version: int, sep: str) -> list[str]:
    values = [text for frame in tags.getall("TCON") for text in frame.text]
    if version == 3:
        values = [part for text in values for part in text.split(sep)]
    return [v for v in values if v]


def _read_mood(tags: ID3Tags) -> str | None:
    # TMOO first: it is the standard frame; TXXX:MOOD is the v2.3 stand-in.
    for frame in tags.getall("TMOO") + _mood_txxx(tags):
        for text in frame.text:
            if text:
                return text
    return None


def _mood_txxx(tags: ID3Tags) -> list[Frame]:
    return [frame for frame in tags.getall("TXXX") if frame.desc.upper() == MOOD_DESC]


def _is_ours(frame: Frame) -> bool:
    return frame.FrameID in ("TCON", "TMOO") or (
        frame.FrameID == "TXXX" and frame.desc.upper() == MOOD_DESC
    )


def _encoding(version: int) -> Encoding:
    # v2.3 has no UTF-8; UTF-16 holds every character.
    return Encoding.UTF16 if version == 3 else Encoding.UTF8


def _put_genres(tags: ID3Tags, genres: list[str], version: int, sep: str) -> None:
    if not genres:  # no empty TCON frame: readers would show an empty genre
        tags.delall("TCON")
        return
    text = [sep.join(genres)] if version == 3 else list(genres)
    tags.setall("TCON", [TCON(encoding=_encoding(version), text=text)])


def _put_mood(tags: ID3Tags, mood: str, version: int) -> None:
    # Drop both spellings so no reader is left with a stale mood in the other frame.
    tags.delall("TMOO")
    for frame in _mood_txxx(tags):
        del tags[frame.HashKey]
    if version == 3:
        tags.add(TXXX(encoding=_encoding(version), desc=MOOD_DESC, text=[mood]))
    else:
        tags.add(TMOO(encoding=_encoding(version), text=[mood]))


class ID3Container(TagBlock):
    """An mp3, WAV or AIFF file's ID3v2 tag and how it is written (see
    :class:`.contract.Container`)."""

    def __init__(self, file: FileType, target: Target) -> None:
        super().__init__(file)
        self.target = target

    def read(self) -> FileTags:
        """The genres and the mood stored in the tag (the v1 genre where v2 has none)."""
        tags, target = self.file.tags, self.target
        genres = _read_genres(tags, target.version, target.sep) or list(target.v1_genres)
        return FileTags(genres, _read_mood(tags))

    def normalize(self, genres: list[str]) -> list[str]:
        """Predicted genres as this tag can hold them: a v2.3 tag splits them on its
        separator."""
        if self.target.version != 3:
            return list(genres)
        return [part for genre in genres for part in genre.split(self.target.sep)]

    def set_genres(self, genres: list[str]) -> None:
        """Replace the genres (in memory)."""
        _put_genres(self.file.tags, genres, self.target.version, self.target.sep)

    def set_mood(self, mood: str) -> None:
        """Replace the mood (in memory)."""
        _put_mood(self.file.tags, mood, self.target.version)

    def tag_others(self) -> list[str]:
        """A normalized dump of every frame that is not ours (pictures' bytes included)."""
        tags = self.file.tags
        dump = [repr(tags[key]) for key in sorted(tags.keys()) if not _is_ours(tags[key])]
        return dump + [repr(raw) for raw in tags.unknown_frames]

    def save(self) -> None:
        """Write the tag into the file as ID3v2.``target.version``; the v1 block stays.

        ``v23_sep=None``: our ``TCON`` is joined already, and every other frame is written
        with the values it was read with, so a v2.3 file's untouched frames stay as they were.
        """
        f, version = self.file, self.target.version
        v1 = v1_block(f.filename)
        if isinstance(f, MP3):  # WAVE ignores v1 and AIFF's save has no such option
            # REMOVE, then the original bytes go back: UPDATE would rewrite them from v2.
            f.save(v2_version=version, v23_sep=None, v1=ID3v1SaveOptions.REMOVE)
        else:
            f.save(v2_version=version, v23_sep=None)
        if v1 and v1_block(f.filename) != v1:
            with open(f.filename, "r+b") as out:
                out.seek(0, os.SEEK_END)
                out.write(v1)
