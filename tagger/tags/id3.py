"""ID3v2: mp3, and WAV / AIFF through their ``id3`` chunk.

Genres go to ``TCON`` and the mood to ``TMOO`` (ID3v2.4). ID3v2.3 has neither a mood frame
nor multi-value text, so in a v2.3 tag the mood goes to ``TXXX:MOOD`` (the field foobar2000,
Mp3tag and MediaMonkey use there) and the genres are joined with :data:`V23_SEP` into one
``TCON`` string, which v2.3 readers (Picard's default, TagLib/Navidrome, beets) split on.
Reading a v2.3 tag splits ``TCON`` on the same separator, so a genre name that itself holds
a ``"/"`` ("Hip-Hop/Rap") reads as two genres there, exactly as those readers show it.

Tags are loaded *untranslated*: mutagen's default load upgrades every frame to v2.4
(``TYER`` -> ``TDRC``, ``"(17)"`` -> ``"Rock"``, ...), which would rewrite frames nobody asked
us to touch. Loading raw and saving with the file's own version keeps them as they are; only
an explicit version change translates (:func:`load`).
"""

from __future__ import annotations

from mutagen import FileType
from mutagen.aiff import AIFF
from mutagen.id3 import ID3Tags, TCON, TMOO, TXXX, Encoding, Frame
from mutagen.mp3 import MP3
from mutagen.wave import WAVE

__all__ = ["KINDS", "V23_SEP", "load", "read", "set_genres", "set_mood", "others", "save"]

KINDS: tuple[type[FileType], ...] = (MP3, WAVE, AIFF)
V23_SEP = "/"
MOOD_DESC = "MOOD"


def load(path: str, kind: type[FileType], version: int | None = None) -> tuple[FileType, int]:
    """Open ``path`` and return it with the ID3v2 version it will be saved as.

    Parameters
    ----------
    path : str
        The audio file.
    kind : type
        Its mutagen class (``MP3``, ``WAVE`` or ``AIFF``).
    version : {None, 3, 4}
        ``None`` keeps the file's own version (v2.3 stays v2.3); ID3v1-only, v2.2 and new
        tags become v2.4, the versions mutagen can write. ``3`` or ``4`` converts.

    Returns
    -------
    (FileType, int)
        The file, with a (possibly empty) ID3 tag, and the target major version.
    """
    f = kind(path, translate=False)
    if f.tags is None:
        f.add_tags()
        return f, version or 4
    have = f.tags.version[1] if f.tags.version[0] == 2 else 1
    target = version or (have if have in (3, 4) else 4)
    if have != target:
        _convert(f.tags, have, target)
    return f, target


def _convert(tags: ID3Tags, have: int, target: int) -> None:
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
    genres = _read_genres(tags, have)
    if genres:
        _put_genres(tags, genres, target)
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


def read(f: FileType, version: int) -> tuple[list[str], str | None]:
    """The genres and the mood stored in ``f``'s tag."""
    return _read_genres(f.tags, version), _read_mood(f.tags)


def _read_genres(tags: ID3Tags, version: int) -> list[str]:
    values = [text for frame in tags.getall("TCON") for text in frame.text]
    if version == 3:
        values = [part for text in values for part in text.split(V23_SEP)]
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


def set_genres(f: FileType, genres: list[str], version: int) -> None:
    """Replace the genres of ``f`` (in memory)."""
    _put_genres(f.tags, genres, version)


def _put_genres(tags: ID3Tags, genres: list[str], version: int) -> None:
    text = [V23_SEP.join(genres)] if version == 3 else list(genres)
    tags.setall("TCON", [TCON(encoding=_encoding(version), text=text)])


def set_mood(f: FileType, mood: str, version: int) -> None:
    """Replace the mood of ``f`` (in memory)."""
    _put_mood(f.tags, mood, version)


def _put_mood(tags: ID3Tags, mood: str, version: int) -> None:
    # Drop both spellings so no reader is left with a stale mood in the other frame.
    tags.delall("TMOO")
    for frame in _mood_txxx(tags):
        del tags[frame.HashKey]
    if version == 3:
        tags.add(TXXX(encoding=_encoding(version), desc=MOOD_DESC, text=[mood]))
    else:
        tags.add(TMOO(encoding=_encoding(version), text=[mood]))


def others(f: FileType) -> list[str]:
    """A normalized dump of every frame that is not ours (pictures' bytes included)."""
    tags = f.tags
    dump = [repr(tags[key]) for key in sorted(tags.keys()) if not _is_ours(tags[key])]
    return dump + [repr(raw) for raw in tags.unknown_frames]


def save(f: FileType, version: int) -> None:
    """Write the tag into ``f``'s file as ID3v2.``version``.

    ``v23_sep=None``: our ``TCON`` is joined already, and every other frame is written with
    the values it was read with, so a v2.3 file's untouched frames stay as they were.
    """
    f.save(v2_version=version, v23_sep=None)
