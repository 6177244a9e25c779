"""One watched folder over its life: scheduled on an observer, lost, and watched again.

A watched folder may vanish and come back (a share unmounted and mounted again, a folder
deleted and re-created); watchdog drops a watch whose folder goes and never notices the new
one. So each root follows its folder's identity (device, inode) on every tick of the daemon
and schedules a new watch (inotify where it can be trusted, else polling) when the folder is
back; the daemon then scans it for what changed meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from typing import TYPE_CHECKING

from .events import EventHandler
from .mounts import needs_polling

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver, ObservedWatch

    from .daemon import Daemon

log = logging.getLogger(__name__)

__all__ = ["WatchedRoot"]


class WatchedRoot:
    """One watched folder: schedules, unschedules and reschedules its watch as the folder
    disappears and comes back (an unmounted share, a deleted and re-created folder)."""

    RETRY = 30.0  # seconds between two attempts to watch a folder that refused

    def __init__(self, path: str, force_poll: bool) -> None:
        self.path = path
        self.force_poll = force_poll
        self.identity: tuple[int, int] | None = None
        self.watch: ObservedWatch | None = None
        self.observer: BaseObserver | None = None
        self.kind = ""
        self.quiet: float | None = None  # quiet seconds below it (None: not scheduled yet)
        self.lost = False  # the observer saw the folder itself go (its inode may come back)
        self._missing_logged = False
        self._retry_at = 0.0

    @property
    def watched(self) -> bool:
        """Whether an observer watches the folder now."""
        return self.watch is not None

    def mark_lost(self) -> None:
        """The observer saw the folder itself go: look again on the next refresh."""
        self.lost = True

    def _current_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def refresh(self, daemon: Daemon) -> bool:
        """Follow the folder's state; returns True when it was (re)scheduled and needs a scan."""
        identity = self._current_identity()
        if identity == self.identity and not self.lost:
            if identity is None or self.watched or time.monotonic() < self._retry_at:
                return False
        self.unschedule()
        self.identity, self.lost = identity, False
        if identity is None:
            if not self._missing_logged:
                log.warning("%s is not there (removed or not mounted); watching for it to "
                            "come back", self.path)
                self._missing_logged = True
            daemon.settler.forget_under(self.path)
            return False
        self._missing_logged = False
        return self.schedule(daemon)

    def schedule(self, daemon: Daemon) -> bool:
        """Watch the folder (inotify, else polling); returns whether a watch was scheduled."""
        real = os.path.realpath(self.path)
        network = needs_polling(real)
        kinds = ["polling"] if self.force_poll or network else ["native", "polling"]
        for kind in kinds:
            observer = daemon.observer(kind)
            close_events = type(observer).__name__.startswith("Inotify")
            quiet = daemon.settings.quiet_time(kind == "polling", network is not None)
            handler = EventHandler(self.path, real, daemon.settler, close_events,
                                    self.mark_lost, quiet)
            try:
                self.watch = observer.schedule(handler, real, recursive=True)
            except OSError as err:  # e.g. the inotify watch limit: poll instead
                log.warning("cannot watch %s with %s (%s)", self.path, kind, err)
                continue
            self.observer, self.kind, self.quiet = observer, kind, quiet
            if kind == "native":
                how = "inotify" if close_events else "native events"
            else:
                how = f"polling every {daemon.settings.poll_interval:g} s"
                how += f": {network} file system" if network else ""
                how += f"; files settle for {quiet:g} s"
            log.info("watching %s (%s)", self.path, how)
            return True
        self._retry_at = time.monotonic() + self.RETRY
        return False

    def unschedule(self) -> None:
        """Drop the folder's watch, if any."""
        if self.watch is not None and self.observer is not None:
            with contextlib.suppress(KeyError, RuntimeError):
                self.observer.unschedule(self.watch)
        self.watch = self.observer = None

