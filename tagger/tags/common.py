"""What several container modules share."""

from __future__ import annotations

from mutagen import FileType

__all__ = ["load_with_tags"]


def load_with_tags(path: str, kind: type[FileType]) -> FileType:
    """Open ``path`` as ``kind``; a file without a tag block gets an empty one (a FLAC file
    without a comment block, an MP4 without ``ilst``; Ogg always has its comment header)."""
    f = kind(path)
    if f.tags is None:
        f.add_tags()
    return f
