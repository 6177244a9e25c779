"""The threads that do the daemon's work, and what a worker does with one job.

Workers
    ``workers`` threads claim jobs from the cache's queue and run :meth:`Tagger.tag` (the code
    ``genreml tag`` runs) on one shared :class:`~tagger.model.ModelSet`: onnxruntime's ``run``
    is thread-safe and releases the GIL, as do decoding and resampling, so threads overlap
    where it matters without loading the models once per worker. A failure retries with
    exponential back-off and, after ``max_attempts``, stays ``failed`` with its error
    (``genreml status``). A file found open for writing or changed at write-back time
    (:class:`~tagger.tags.FileBusy`, :class:`~tagger.tags.FileChanged`) is no failure: it goes
    back to settling and is queued again once it is quiet, whatever the cache says.
The scanner
    One thread runs the catch-up scans (:meth:`Intake.catch_up
    <tagger.watch.intake.Intake.catch_up>`) one folder at a time, off the main loop: a big
    library on a share may take longer than the systemd watchdog allows the main loop.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..audio import AudioError
from ..report import failure_reason, skip_reason
from ..tags import FileBusy, FileChanged, TagError

if TYPE_CHECKING:
    from ..cache import Cache, Job
    from ..tagging import Outcome, Tagger
    from .beetslib import BeetsLibrary
    from .daemon import Daemon
    from .links import LinkGuard
    from .settings import WatchSettings
    from .settle import Settler

log = logging.getLogger(__name__)

__all__ = ["IDLE_WAIT", "NOT_YET", "Processing", "Scanner", "Worker"]

# "Not yet", not a failure: the file is being written, or changed since its analysis began.
NOT_YET = (FileBusy, FileChanged)
IDLE_WAIT = 1.0           # seconds an idle worker sleeps before looking for due retries


def _describe(outcome: Outcome) -> str:
    genres = ", ".join(g for g, _ in outcome.result.genres) or "-"
    mood = outcome.result.emotion[0] if outcome.result.emotion else "-"
    return f"{outcome.status} {outcome.path}: {genres} | {mood} ({outcome.source})"


class Worker(threading.Thread):
    """Claims jobs from the queue and tags their files until the daemon stops."""

    def __init__(self, daemon: Daemon, index: int) -> None:
        super().__init__(name=f"genreml-worker-{index}", daemon=True)
        self._daemon = daemon

    def run(self) -> None:
        d = self._daemon
        tagger = d.make_tagger()
        while not d.stopping.is_set():
            try:
                job = d.cache.claim()
                if job is None:
                    d.wake.wait(IDLE_WAIT)
                    d.wake.clear()
                    continue
                d.process(job, tagger)
            except Exception:  # the database, most likely: wait and go on
                log.exception("worker error")
                d.stopping.wait(IDLE_WAIT)


class Scanner(threading.Thread):
    """Runs catch-up scans one folder at a time, off the main loop (a big library on a share
    may take longer than the systemd watchdog allows the main loop)."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(name="genreml-scanner", daemon=True)
        self._daemon = daemon
        self._queue: queue.Queue[str] = queue.Queue()

    @property
    def busy(self) -> bool:
        """A scan is asked for or running (``unfinished_tasks`` counts both, atomically)."""
        return self._queue.unfinished_tasks > 0

    def request(self, root: str) -> None:
        """Scan ``root`` once the scans asked for before are done."""
        self._queue.put(root)

    def run(self) -> None:
        d = self._daemon
        while not d.stopping.is_set():
            try:
                root = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                d.catch_up(root)
            except Exception:
                log.exception("catch-up scan of %s failed", root)
            finally:
                self._queue.task_done()



class Processing:
    """The daemon's part that tags one claimed job and records the outcome in the queue.

    A mixin of :class:`~tagger.watch.daemon.Daemon`; the attributes below are the daemon's
    (``_state_lock`` guards the state it shares with :class:`~tagger.watch.intake.Intake`).
    """

    cache: Cache
    settings: WatchSettings
    settler: Settler
    links: LinkGuard
    beets: BeetsLibrary | None
    stats: Counter[str]
    _state_lock: threading.Lock
    _in_progress: set[str]  # paths in a worker's hands
    _owed: set[str]  # files whose tags could not be written yet: queued once settled
    _quiet_for: Callable[[str], float]

    def process(self, job: Job, tagger: Tagger) -> None:
        """Tag one job's file and record the outcome in the queue."""
        with self._state_lock:
            self._in_progress.add(job.path)
        try:
            self._process(job, tagger)
        finally:
            with self._state_lock:
                self._in_progress.discard(job.path)

    def _process(self, job: Job, tagger: Tagger) -> None:
        path = job.path
        if not os.path.isfile(path):
            self.cache.complete(job.id)
            log.info("%s is gone; dropped from the queue", path)
            return
        if not self.links.allows(path):  # became a link out since it was queued
            self.cache.complete(job.id)
            return
        try:
            outcome = tagger.tag(path)  # also removes stale temporary copies in its folder
        except NOT_YET as err:
            self._not_yet(job, err)
            return
        except Exception as err:  # one broken file must not stop the daemon
            skipped = skip_reason(err)
            if skipped:  # nothing to tag (a silent track): done, not a failure to retry
                self.cache.complete(job.id)
                with self._state_lock:
                    self.stats["skipped"] += 1
                log.info("skipped %s: %s", path, skipped)
                return
            if not isinstance(err, (AudioError, TagError, OSError)):
                log.debug("traceback for %s", path, exc_info=True)
            self._failed(job, failure_reason(err))
            return
        if self.beets is not None:
            try:
                self.beets.update(outcome)
            except Exception as err:  # the file is tagged; beets can catch up with `beet genreml`
                log.warning("%s: beets library not updated: %s", path, err)
        self.cache.complete(job.id)
        with self._state_lock:
            self.stats.update(["done", outcome.status, outcome.source])
        log.info("%s", _describe(outcome))

    def _not_yet(self, job: Job, err: Exception) -> None:
        """The file is being written or changed under us: no attempt lost, back to settling.
        The cache may hold its result already, so it is queued when it settles anyway."""
        self.cache.complete(job.id)
        with self._state_lock:
            self._owed.add(job.path)
            self.stats["deferred"] += 1
        self.settler.touch(job.path, settle=self._quiet_for(job.path))
        log.info("%s: not yet (%s); tagged once it settles", job.path, failure_reason(err))

    def _failed(self, job: Job, reason: str) -> None:
        s = self.settings
        after = self.cache.fail(job.id, reason, s.max_attempts, s.retry_delay)
        with self._state_lock:
            self.stats["errors"] += 1
            if after.state == "failed":
                self.stats["failed"] += 1
        if after.state == "failed":
            log.error("failed %s: %s (gave up after %d attempts)", job.path, reason,
                      job.attempts)
        else:
            wait = (after.not_before - datetime.now(timezone.utc)).total_seconds()
            log.warning("error %s: %s (attempt %d of %d, retry in %.1f s)", job.path, reason,
                        job.attempts, s.max_attempts, max(wait, 0.0))
