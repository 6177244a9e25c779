"""Mood playlists: extended M3U from ranked tracks, shared by ``genreml playlist`` and beets.

An M3U entry is a line, so a file name holding a line break would inject entries of its own
choosing into the playlist: such files are left out, with a warning. A cached path that is
now a FIFO or a device is never opened (it could block forever).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .report import printable

log = logging.getLogger(__name__)



class _Item(Protocol):
    """What a playlist needs of a beets item."""

    def get(self, key: str, default: Any = None) -> Any: ...


T = TypeVar("T", bound=_Item)

__all__ = ["PlaylistEntry", "UnknownLabel", "display_title", "format_m3u", "item_entries",
           "match_label", "rank_items", "regular_file", "write_text_atomically"]

# Every character str.splitlines() breaks on: some players split on more than "\n".
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


@dataclasses.dataclass(frozen=True)
class PlaylistEntry:
    """One track of a playlist; ``title`` is shown by players (``Artist - Title``)."""

    path: str
    duration: float | None
    title: str


class UnknownLabel(ValueError):
    """A mood or genre the models do not know; the message lists the ones they do."""


def match_label(label: str, known: Iterable[str], what: str = "label") -> str:
    """The known label ``label`` names, matched without regard to case.

    Parameters
    ----------
    label : str
        As the user typed it, e.g. ``"Calm"``.
    known : iterable of str
        The labels of the models (or of the cache).
    what : str
        ``"mood"`` or ``"genre"``, for the message.

    Raises
    ------
    UnknownLabel
        No known label matches; the message lists them.
    """
    known = sorted(set(known), key=str.casefold)
    if label in known:
        return label
    matches = [k for k in known if k.casefold() == label.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not known:
        raise UnknownLabel(f"unknown {what} {label!r}: no {what} results yet")
    raise UnknownLabel(f"unknown {what} {label!r}; known: {', '.join(known)}")


def regular_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file (stat only); a FIFO, device or folder is logged
    and left out, a missing file silently."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        log.warning("%s: not a regular file; left out of the playlist", printable(path))
        return False
    return True


def display_title(path: str | os.PathLike[str]) -> str:
    """``Artist - Title`` from the file's tags, else the file name without extension.

    The file is opened non-blocking and read only if it is a regular file: a path that became
    a FIFO meanwhile cannot hang the playlist.
    """
    import mutagen

    title = artist = ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        fd = -1
    if fd >= 0:
        with os.fdopen(fd, "rb") as f:
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                try:
                    tags = mutagen.File(f, easy=True)
                except Exception:  # an unreadable tag must not drop the track from a playlist
                    tags = None
                if tags is not None and tags.tags:
                    artist = (tags.get("artist") or [""])[0]
                    title = (tags.get("title") or [""])[0]
    if title:
        return f"{artist} - {title}" if artist else title
    return Path(os.fsdecode(path)).stem


def _one_line(text: str) -> str:
    """A tag value as one line: every run of whitespace or control characters one space."""
    return " ".join("".join(" " if not ch.isprintable() else ch for ch in text).split())


def rank_items(items: Iterable[T], key: str, genre: str | None = None,
               limit: int | None = None) -> list[T]:
    """beets items for a playlist, in order.

    Parameters
    ----------
    items : iterable of beets.library.Item
        Anything with beets' ``get``.
    key : str
        The probability field to order by, highest first (ties: by path).
    genre : str, optional
        Only items the models tagged with this genre (``genreml_genres``, compared
        slugified: any spelling of the models' label).
    limit : int, optional
        At most this many.

    Returns
    -------
    list
    """
    from .beetsfields import slugify

    if genre:
        want = slugify(genre)
        items = [i for i in items if want in {slugify(g) for g in i.get("genreml_genres") or []}]
    ordered = sorted(items, key=lambda i: (-float(i.get(key) or 0.0), os.fsdecode(i.get("path"))))
    return ordered if limit is None else ordered[: max(limit, 0)]


def item_entries(items: Iterable[_Item]) -> list[PlaylistEntry]:
    """Playlist entries of beets items (``Artist - Title`` from the library, not the file)."""
    entries = []
    for item in items:
        path = os.fsdecode(item.get("path"))
        title = item.get("title") or Path(path).stem
        artist = item.get("artist")
        entries.append(PlaylistEntry(path, item.get("length") or None,
                                     f"{artist} - {title}" if artist else title))
    return entries


def format_m3u(entries: Iterable[PlaylistEntry]) -> str:
    """Extended M3U text: ``#EXTM3U`` then ``#EXTINF:<seconds>,<title>`` and the path per
    track, as the entry gives it. A path with a line break is left out (logged): it would
    inject lines of its own."""
    lines = ["#EXTM3U"]
    for e in entries:
        path = os.fsdecode(e.path)
        if _LINE_BREAKS.intersection(path):
            log.warning("%s: line break in the file name; left out of the playlist",
                        printable(path))
            continue
        seconds = -1 if e.duration is None or e.duration <= 0 else int(round(e.duration))
        lines += [f"#EXTINF:{seconds},{_one_line(e.title)}", path]
    return "\n".join(lines) + "\n"


def write_text_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8; undecodable path bytes kept) in one rename, so a
    player never reads half a playlist. Returns the path."""
    path = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path

