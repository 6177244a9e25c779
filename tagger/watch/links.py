"""Keep the watch daemon inside its folders: symlinks that lead out of every watched root.

``W/link.mp3 -> /elsewhere/song.mp3`` (or a linked folder ``W/more -> /elsewhere``) would
let the daemon write tags into a file the user never asked it to watch. Such paths are
skipped unless the user asked to follow links (``genreml watch --follow-links``). A link
whose target lies inside a watched root (the same folder, or another root) is fine: that file
is watched anyway.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

__all__ = ["LinkGuard", "inside"]


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both real, absolute paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class LinkGuard:
    """Drops paths whose real path leaves every watched root.

    Parameters
    ----------
    roots : callable
        The watched roots now (they may be symlinks themselves, and may come and go).
    follow : bool
        Follow links out of the roots anyway (nothing is dropped).

    Notes
    -----
    Each skipped path is logged at INFO once per daemon run.
    """

    def __init__(self, roots: Callable[[], Iterable[str]], follow: bool = False) -> None:
        self._roots = roots
        self.follow = follow
        self._skipped: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, paths: Iterable[str]) -> list[str]:
        """The ``paths`` whose real path lies in a watched root, in their order."""
        paths = list(paths)
        if self.follow or not paths:
            return paths
        # The roots' real paths once per batch: a root may be a link, or re-mounted.
        real_roots = [os.path.realpath(r) for r in self._roots()]
        kept = []
        for path in paths:
            real = os.path.realpath(path)
            if any(inside(real, root) for root in real_roots):
                kept.append(path)
                continue
            with self._lock:
                first = path not in self._skipped
                self._skipped.add(path)
            if first:
                log.info("%s: skipped, a link to %s outside the watched folders "
                         "(--follow-links follows it)", path, real)
        return kept

    def allows(self, path: str) -> bool:
        """Whether ``path`` lies in a watched root once its links are followed."""
        return bool(self.filter([path]))
