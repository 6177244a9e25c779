"""When a file that changed is ready to be tagged: quiet long enough, and nobody writing it.

A file is replaced by rename when its tags are written; a writer that still holds it open
would go on writing into the unlinked old inode and the download would be cut off. So a file
is *due* only when

- its size and mtime have not changed for its quiet time (``settle`` seconds on a local disk;
  much longer on a polled or network root, where changes are seen late or not at all),
- no process that :func:`tagger.openfiles.writers` can see holds it open for writing, however
  long that writer stays idle, and
- where that look is incomplete (another user's processes) and inotify said "written, not
  closed", :data:`OPEN_GRACE` seconds have passed.

The write-back itself re-checks the file's identity right before the rename (``expected=``
in :func:`tagger.tags.write_tags`); this module only keeps files from being queued too early.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading
import time
from collections.abc import Callable

from ..openfiles import OpenWriters, writers

log = logging.getLogger(__name__)

__all__ = ["OPEN_GRACE", "Settler", "quiet_time"]

# A writer we cannot see (another user's process) that inotify reported writing and never
# closing: after this many quiet seconds it is assumed gone. Long: a download manager may
# pause for minutes between two chunks.
OPEN_GRACE = 3600.0
# Seconds between two looks in /proc for a file seen open for writing (a look costs a few ms;
# a torrent client may hold dozens of files open for hours).
BUSY_RECHECK = 5.0


def quiet_time(settle: float, polled: bool, poll_interval: float, network: bool,
               network_settle: float) -> float:
    """Quiet seconds a file below one watched root needs before it is due.

    Parameters
    ----------
    settle : float
        The configured quiet time (``--settle``).
    polled : bool
        The root is polled: a change shows only at the next poll, so two poll intervals are
        added (one to see a change, one to see that nothing followed it).
    poll_interval : float
        Seconds between two polls.
    network : bool
        The root lies on a network or FUSE file system: writers on other machines cannot be
        seen at all, so at least ``network_settle`` seconds.
    network_settle : float
        The quiet time for network roots (``--network-settle``).

    Returns
    -------
    float
    """
    quiet = settle + 2 * poll_interval if polled else settle
    return max(quiet, network_settle) if network else quiet


@dataclasses.dataclass
class _Entry:
    since: float                          # last event or observed change (monotonic)
    settle: float                         # quiet seconds this file needs
    stat: tuple[int, int] | None = None   # (size, mtime_ns) at the last look
    writing: bool = False                 # written to and not yet closed (inotify only)
    busy: tuple[int, ...] = ()            # writer pids at the last look (logged on change)
    look_after: float = float("-inf")     # no /proc look before this (monotonic)


class Settler:
    """Files that changed recently, until they are due (see the module's docstring).

    Thread-safe: observers and the catch-up scan :meth:`touch`, the main loop asks
    :meth:`due`.

    Parameters
    ----------
    settle : float
        Quiet seconds needed where :meth:`touch` does not say otherwise.
    open_grace : float
        Quiet seconds after which a file inotify saw written and not closed is taken anyway,
        when its writer cannot be looked for (see :attr:`OpenWriters.complete`).
    clock : callable
        Monotonic seconds (tests pass their own).
    look : callable
        Who holds a path open for writing (default :func:`tagger.openfiles.writers`,
        counting this process's own descriptors too).
    """

    def __init__(self, settle: float, open_grace: float = OPEN_GRACE,
                 clock: Callable[[], float] = time.monotonic,
                 look: Callable[[str], OpenWriters] | None = None) -> None:
        self.settle = settle
        self.open_grace = max(open_grace, settle)
        self.passes = 0  # calls of due() so far: tests wait on it instead of sleeping
        self._clock = clock
        self._look_writers = look or (lambda path: writers(path, include_self=True))
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._passed = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def touch(self, path: str, writing: bool | None = None, settle: float | None = None) -> None:
        """Something happened to ``path``: restart its quiet time.

        ``writing``: True after a write (inotify: wait for the close), False after a
        close-write or a rename into place, None when unknown (keeps the previous state).
        ``settle``: the quiet seconds its root needs (default: the Settler's).
        """
        now = self._clock()
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry(now, self.settle)
            entry.since = now
            if settle is not None:
                entry.settle = settle
            if writing is not None:
                entry.writing = writing
            if writing is False:  # closed: look for writers again as soon as it is quiet
                entry.look_after = float("-inf")

    def forget(self, path: str) -> None:
        with self._lock:
            self._entries.pop(path, None)

    def forget_under(self, folder: str) -> None:
        """Forget every file at or below ``folder`` (it was deleted or moved away)."""
        prefix = folder.rstrip(os.sep) + os.sep
        with self._lock:
            for path in [p for p in self._entries if p == folder or p.startswith(prefix)]:
                del self._entries[path]

    def quiet(self, path: str) -> float | None:
        """Seconds since ``path`` last changed, as far as the Settler knows; None when it is
        not waiting."""
        with self._lock:
            entry = self._entries.get(path)
            return None if entry is None else self._clock() - entry.since

    def wait_passes(self, count: int, timeout: float) -> bool:
        """Block until :meth:`due` has run ``count`` more times (tests); False on timeout."""
        with self._passed:
            target = self.passes + count
            return self._passed.wait_for(lambda: self.passes >= target, timeout)

    def due(self) -> list[str]:
        """The files that are due; they are forgotten (a later change touches again)."""
        with self._lock:
            snapshot = [(p, e, e.since) for p, e in self._entries.items()]
        ready: set[str] = set()
        gone: set[str] = set()
        for path, entry, _ in snapshot:  # stat and /proc outside the lock: both may be slow
            state = self._look(path, entry)
            if state == "gone":
                gone.add(path)
            elif state == "ready":
                ready.add(path)
        settled: list[str] = []
        with self._lock:
            for path, _, since in snapshot:
                entry = self._entries.get(path)
                # A touch that came in meanwhile wins: the file is not quiet after all.
                if entry is None or entry.since != since:
                    continue
                if path in gone:
                    del self._entries[path]
                elif path in ready:
                    del self._entries[path]
                    settled.append(path)
            self.passes += 1
            self._passed.notify_all()
        return sorted(settled)

    def _look(self, path: str, entry: _Entry) -> str:
        """``gone``, ``ready`` or ``wait``; notes a changed stat as activity."""
        try:
            st = os.stat(path)
        except OSError:
            return "gone"
        if not stat.S_ISREG(st.st_mode):
            return "gone"
        now = self._clock()
        current = (st.st_size, st.st_mtime_ns)
        if entry.stat is not None and current != entry.stat:
            entry.since = now  # changed without an event (polling, or between two events)
        entry.stat = current
        quiet = now - entry.since
        if quiet < entry.settle or st.st_size == 0 or now < entry.look_after:
            return "wait"
        # Only now look in /proc (a few ms): for files that would otherwise be due.
        found = self._look_writers(path)
        if found.busy:
            if found.pids != entry.busy:
                log.debug("%s: still open for writing (pid %s); waiting for it to be closed",
                          path, ", ".join(map(str, found.pids)))
            entry.busy = found.pids
            entry.look_after = now + BUSY_RECHECK
            return "wait"  # however long the writer stays idle: replacing would cut it off
        entry.busy = ()
        if entry.writing and not found.complete and quiet < self.open_grace:
            return "wait"  # written, not closed, and the writer may be one we cannot see
        return "ready"
