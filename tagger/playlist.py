"""Mood playlists: extended M3U from ranked tracks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PlaylistEntry", "display_title", "format_m3u", "write_m3u"]


@dataclasses.dataclass(frozen=True)
class PlaylistEntry:
    """One track of a playlist; ``title`` is shown by players (``Artist - Title``)."""

    path: str
    duration: float | None
    title: str


def display_title(path: str | Path) -> str:
    """``Artist - Title`` from the file's tags, else the file name without extension."""
    import mutagen

    try:
        tags = mutagen.File(path, easy=True)
    except Exception:  # an unreadable tag must not drop the track from a playlist
        tags = None
    artist = (tags.get("artist") or [""])[0] if tags is not None and tags.tags else ""
    title = (tags.get("title") or [""])[0] if tags is not None and tags.tags else ""
    if title:
        return f"{artist} - {title}" if artist else title
    return Path(path).stem


def format_m3u(entries: Iterable[PlaylistEntry], relative_to: str | Path | None = None) -> str:
    """Extended M3U text: ``#EXTM3U`` then ``#EXTINF:<seconds>,<title>`` and the path per
    track. Paths are made relative to ``relative_to`` (the playlist's folder) when given."""
    lines = ["#EXTM3U"]
    for e in entries:
        seconds = -1 if e.duration is None else int(round(e.duration))
        title = " ".join(e.title.split())  # one line, whatever the tag held
        path = os.path.relpath(e.path, relative_to) if relative_to else e.path
        lines += [f"#EXTINF:{seconds},{title}", path]
    return "\n".join(lines) + "\n"


def write_m3u(entries: Iterable[PlaylistEntry], out: str | Path) -> Path:
    """Write an extended M3U file (UTF-8) with absolute paths; returns its path."""
    out = Path(out)
    out.write_text(format_m3u(entries), encoding="utf-8")
    return out
