"""Reading any named field of a file's tags: the labels ``genreml learn`` learns from.

genreml's own two fields are read by each container's ``read`` (:func:`.writer.read_tags`).
A library may keep its truth elsewhere: a Vorbis ``STYLE`` comment, an ID3 ``TXXX:STYLE``
frame, an iTunes freeform atom. :func:`read_fields` reads such fields by one name across
containers, and the artist and album that group tracks for cross-validation.

A name is looked up per container:

* Vorbis comments (FLAC, Ogg): the comment of that name, case-insensitively.
* ID3: a frame id (``TCON``, ``TPE1``), ``TXXX:DESC``, a common name (``genre``, ``mood``,
  ``artist``, ``albumartist``, ``album``), else the ``TXXX`` frame whose description is the
  name, case-insensitively.
* MP4: a full atom name (``©gen``, ``----:com.apple.iTunes:STYLE``), a common name, else the
  freeform atom of that name under any mean.

Nothing is written; the file is opened as :func:`.container.open_tagged` opens it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from mutagen.id3 import ID3Tags
from mutagen.mp4 import MP4Tags

from .container import open_tagged, stat_regular
from .contract import Options
from .errors import errors

__all__ = ["read_fields"]

_ID3 = {"genre": "TCON", "mood": "TMOO", "artist": "TPE1", "albumartist": "TPE2",
        "album": "TALB", "title": "TIT2"}
_MP4 = {"genre": "\xa9gen", "mood": "----:com.apple.iTunes:MOOD", "artist": "\xa9ART",
        "albumartist": "aART", "album": "\xa9alb", "title": "\xa9nam"}


def _text(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):  # MP4 freeform atoms
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _id3(tags: ID3Tags, name: str) -> list[str]:
    frame_id = _ID3.get(name.casefold(), name)
    if frame_id.upper().startswith("TXXX:"):
        desc = frame_id[5:].casefold()
    elif len(frame_id) == 4 and frame_id.isupper() and frame_id.isalnum():
        frames = tags.getall(frame_id)
        if frame_id == "TCON":  # "(17)" and "Rock" alike
            return [g for f in frames for g in f.genres]
        if name.casefold() == "mood" and not frames:  # ID3v2.3 keeps it in TXXX:MOOD
            desc = "mood"
        else:
            return [_text(t) for f in frames for t in getattr(f, "text", [])]
    else:
        desc = name.casefold()
    return [_text(t) for f in tags.getall("TXXX") if f.desc.casefold() == desc
            for t in f.text]


def _mp4(tags: MP4Tags, name: str) -> list[str]:
    key = _MP4.get(name.casefold(), name)
    if key in tags:
        return [_text(v) for v in tags[key]]
    want = name.casefold()
    return [_text(v) for k, values in tags.items()
            if k.startswith("----:") and k.rsplit(":", 1)[-1].casefold() == want
            for v in values]


def _vorbis(tags: object, name: str) -> list[str]:
    try:
        return [_text(v) for v in tags[name]]  # type: ignore[index]
    except (KeyError, ValueError):
        return []


def read_fields(path: str | os.PathLike[str], names: Iterable[str]) -> dict[str, list[str]]:
    """The values of each named field in a file's tags (an absent field: an empty list).

    Parameters
    ----------
    path : path-like
        The audio file (a symlink is followed).
    names : iterable of str
        Field names, as the module doc describes.

    Raises
    ------
    TagError
        Missing, empty, unsupported or corrupt file.
    """
    real = os.path.realpath(path)
    stat_regular(real)
    tags = open_tagged(real, Options()).file.tags  # type: ignore[attr-defined]
    with errors(real, "cannot read tags"):
        out = {}
        for name in names:
            if tags is None:
                values: list[str] = []
            elif isinstance(tags, ID3Tags):
                values = _id3(tags, name)
            elif isinstance(tags, MP4Tags):
                values = _mp4(tags, name)
            else:
                values = _vorbis(tags, name)
            out[name] = [v.strip() for v in values if v and v.strip()]
        return out
