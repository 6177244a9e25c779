"""The daemon itself: start, the main loop, shutdown and the status line.

The main loop follows the watched folders (:mod:`~tagger.watch.roots`) and the cache file,
hands what settled (:mod:`~tagger.watch.settle`) to the intake (:mod:`~tagger.watch.intake`)
and talks to systemd (:mod:`~tagger.watch.service`); the work itself runs in the worker and
scanner threads (:mod:`~tagger.watch.workers`). SIGTERM/SIGINT stop the daemon within a few
seconds: a file in progress is finished or, after :attr:`WatchSettings.stop_grace`, abandoned
back to the queue (tag writes are atomic, so never half-written).

A cache file deleted or replaced under the running daemon is noticed on the next tick: a
fresh one is created (:meth:`Cache.recreate_if_missing`) and every root is scanned again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .intake import Intake
from .links import LinkGuard
from .roots import WatchedRoot
from .service import DaemonLock, Notifier
from .settings import WatchSettings
from .settle import Settler
from .workers import Processing, Scanner, Worker

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from ..cache import Cache
    from ..tagging import Tagger
    from .beetslib import BeetsLibrary

log = logging.getLogger(__name__)

__all__ = ["Daemon"]

STATUS_EVERY = 2.0        # seconds between STATUS= updates
PRUNE_EVERY = 6 * 3600.0  # seconds between deleting old done jobs
MAX_LOOP_ERRORS = 20      # main-loop failures in a row before the daemon gives up


class Daemon(Intake, Processing):
    """Watch folders, queue settled audio files and tag them.

    Parameters
    ----------
    roots : list of path-like
        Folders to watch (recursively). A folder missing at start is waited for.
    make_tagger : callable
        Returns a :class:`~tagger.tagging.Tagger`; called once per worker, every tagger must
        share one cache and one model set (e.g. ``functools.partial(Tagger, models, cache)``).
    settings : WatchSettings
    beets : BeetsLibrary, optional
        Also update the beets item of each tagged file.
    notifier : Notifier, optional
        systemd notifications (default: from the environment; a no-op outside systemd).
    clock : callable, optional
        Monotonic seconds for settling (tests pass their own to make time pass at will).

    Notes
    -----
    :meth:`run` blocks until :meth:`stop` (from another thread) or :meth:`request_stop` (from
    a signal handler, as the CLI does for SIGTERM and SIGINT).
    """

    def __init__(self, roots: Sequence[str | os.PathLike[str]], make_tagger: Callable[[], Tagger],
                 settings: WatchSettings | None = None, beets: BeetsLibrary | None = None,
                 notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not roots:
            raise ValueError("no folder to watch")
        self.settings = settings or WatchSettings()
        self.make_tagger = make_tagger
        probe = make_tagger()
        self.cache: Cache = probe.cache
        self.models = probe.models
        self.identities = probe.identities
        self.beets = beets
        self.notifier = notifier if notifier is not None else Notifier()
        self.roots = [WatchedRoot(path, self.settings.poll)
                      for path in dict.fromkeys(os.path.abspath(os.fspath(r)) for r in roots)]
        self.settler = Settler(self.settings.settle, clock=clock)
        self.links = LinkGuard(lambda: [r.path for r in self.roots], self.settings.follow_links)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.ready = threading.Event()
        self.stats: Counter[str] = Counter()
        self.abandoned = 0
        self._state_lock = threading.Lock()
        self._observers: dict[str, BaseObserver] = {}
        self._workers: list[Worker] = []
        self._scanner = Scanner(self)
        self._daemon_lock = DaemonLock(self.cache.path)
        self._timers = {"ping": 0.0, "status": 0.0, "prune": time.monotonic() + PRUNE_EVERY}
        self._last_status = ""
        self._stop_requested = False
        self._in_progress: set[str] = set()  # paths in a worker's hands
        # Files whose tags could not be written yet (busy or changed): queued once settled
        # even though the cache already holds their result.
        self._owed: set[str] = set()

    # -- life cycle

    def stop(self) -> None:
        """Ask :meth:`run` to return (from another thread)."""
        self.stopping.set()
        self.wake.set()

    def request_stop(self, *_: object) -> None:
        """Ask :meth:`run` to return, from a signal handler: only a flag, which the main loop
        sees within a tick (setting an Event there could deadlock on the Event's own lock,
        held by the very wait the signal interrupted)."""
        self._stop_requested = True

    def run(self) -> int:
        """Watch until :meth:`stop` or :meth:`request_stop`; returns the exit status (0).

        Raises
        ------
        DaemonError
            Another daemon uses this cache.
        """
        self._daemon_lock.acquire()
        try:
            self._start()
            self._loop()
        finally:
            self._shutdown()
            self._daemon_lock.release()
        return 0

    def _start(self) -> None:
        self.cache.requeue_running(self.settings.max_attempts)
        pruned = self.cache.prune_jobs()
        if pruned:
            log.debug("deleted %d old done jobs", pruned)
        self._warm_up()
        for root in self.roots:
            if root.refresh(self):
                self._scanner.request(root.path)
        self._scanner.start()
        self._workers = [Worker(self, i) for i in range(self.settings.workers)]
        for worker in self._workers:
            worker.start()
        self.ready.set()
        self.notifier.ready(self._status_line())
        log.info("ready: %d worker%s, settle %.1f s, models %s", self.settings.workers,
                 "" if self.settings.workers == 1 else "s", self.settings.settle,
                 ", ".join(dict.fromkeys(i.id for i in self.identities.values())))

    def _warm_up(self) -> None:
        """Run the models once on silence: imports and JIT compilation happen now, before
        READY=1, not on the first file."""
        import numpy as np

        from ..predict import Analyzer

        samples = int(round(self.models.sample_rate * self.models.clip_seconds))
        Analyzer(self.models).predict_clips(np.zeros((1, samples), np.float32))

    def _loop(self) -> None:
        errors = 0
        while not self.stopping.wait(self.settings.tick) and not self._stop_requested:
            try:
                self._tick()
                errors = 0
            except Exception:  # the database busy for long, most likely: try again
                errors += 1
                log.exception("main loop error (%d in a row)", errors)
                if errors >= MAX_LOOP_ERRORS:
                    raise  # exit non-zero: systemd restarts us (Restart=on-failure)

    def _tick(self) -> None:
        """One pass: follow the folders and the cache file, queue what settled, talk to
        systemd."""
        if self._cache_recreated():
            for root in self.roots:
                if root.watched:
                    self._scanner.request(root.path)
        for root in self.roots:
            if root.refresh(self):
                self._scanner.request(root.path)
        due = self.settler.due()
        if due:
            self.submit(due)
        now = time.monotonic()
        t = self._timers
        if self.notifier.watchdog_interval and now >= t["ping"] and self._healthy():
            self.notifier.watchdog()
            t["ping"] = now + self.notifier.watchdog_interval
        if now >= t["status"]:
            line = self._status_line()
            if line != self._last_status:
                self.notifier.status(line)
                self._last_status = line
            t["status"] = now + STATUS_EVERY
        if now >= t["prune"]:
            self.cache.prune_jobs()
            t["prune"] = now + PRUNE_EVERY

    def _cache_recreated(self) -> bool:
        """Whether the cache file was deleted or replaced under us and a fresh one made (one
        stat per tick); what it held is gone, so every root needs a new scan."""
        if not self.cache.recreate_if_missing():
            return False
        log.info("new cache %s: scanning every watched folder again", self.cache.path)
        return True

    def _shutdown(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.notifier.stopping("stopping")
        log.info("stopping")
        for observer in self._observers.values():
            observer.stop()
        deadline = time.monotonic() + self.settings.stop_grace
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.0))
        busy = [w for w in self._workers if w.is_alive()]
        if busy:
            # Still inside one file (decoding or inference cannot be interrupted): its job goes
            # back to pending; the write of its tags is atomic, so the file is either old or new.
            self.abandoned = self.cache.requeue_running(max_attempts=sys.maxsize)
            log.info("abandoned %d file(s) in progress; they stay queued", self.abandoned)
        for observer in self._observers.values():
            with contextlib.suppress(RuntimeError):
                observer.join(1.0)
        counts = self.cache.counts()
        log.info("stopped: %d done, %d failed this run; queue: %d pending",
                 self.stats["done"], self.stats["failed"], counts["pending"])
        self.notifier.close()

    def _healthy(self) -> bool:
        """Whether every thread that does the work is alive (else systemd's watchdog should
        restart us, so we stop pinging)."""
        threads: list[threading.Thread] = [*self._workers, self._scanner,
                                           *self._observers.values()]
        return all(t.is_alive() for t in threads)

    @property
    def scanning(self) -> bool:
        """Whether a catch-up scan is running or asked for."""
        return self._scanner.busy

    def observer(self, kind: str) -> BaseObserver:
        """The running observer of ``kind`` (``native`` or ``polling``), started on first use."""
        observer = self._observers.get(kind)
        if observer is None:
            if kind == "polling":
                from watchdog.observers.polling import PollingObserver

                observer = PollingObserver(timeout=self.settings.poll_interval)
            else:
                from watchdog.observers import Observer

                observer = Observer()
            observer.start()
            self._observers[kind] = observer
        return observer

    # -- status

    def _status_line(self) -> str:
        counts = self.cache.counts()
        watched = sum(r.watched for r in self.roots)
        folders = (f"{watched} folder{'s' if watched != 1 else ''}" if watched == len(self.roots)
                   else f"{watched} of {len(self.roots)} folders")
        scanning = "; scanning" if self.scanning else ""
        return (f"watching {folders}{scanning}; {counts['pending']} queued, "
                f"{counts['running']} running; {self.stats['done']} done, "
                f"{self.stats['failed']} failed since start")

