"""Last checks before a user's file is replaced or written: is it still the file we read,
and is nobody else writing it?"""

from __future__ import annotations

import logging
import os

from ..openfiles import writers
from .errors import FileBusy, FileChanged

__all__ = ["check_identity", "check_not_busy", "fsync", "identity"]

log = logging.getLogger(__name__)


def identity(st: os.stat_result) -> tuple[int, int, int]:
    """What tells a file apart from a changed or replaced one: inode, size, mtime."""
    return st.st_ino, st.st_size, st.st_mtime_ns


def check_identity(path: str, refs: list[os.stat_result]) -> None:
    """Raise :class:`FileChanged` unless ``path`` still has the identity of every ``refs``.

    The first reference is the ``expected`` identity of the analysed file (if given),
    the others the one taken at the start of the write.
    """
    try:
        now = identity(os.stat(path))
    except OSError as e:
        raise FileChanged(path, f"file changed while tagging ({e.strerror}); not written") from e
    for ref in refs:
        if now != identity(ref):
            raise FileChanged(path, "file changed since it was read; not written")


def check_not_busy(path: str) -> None:
    """Raise :class:`FileBusy` if another process holds ``path`` open for writing."""
    seen = writers(path)
    if seen.busy:
        pids = ", ".join(str(p) for p in seen.pids)
        raise FileBusy(path, f"still open for writing by pid {pids}; not replaced")
    if not seen.complete:
        log.debug("%s: cannot see every process's open files; relying on the identity check",
                  path)


def fsync(path: str) -> None:
    """Flush ``path`` (a file or folder) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
