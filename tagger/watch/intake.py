"""What becomes a job: settled files the cache does not know as they are now, and the
catch-up scan of a folder nobody watched for a while.

A settled file whose cached size/mtime still match (:meth:`Cache.lookup_many`) is skipped:
this is what stops our own tag writes (an atomic rename over the file) from looping. Any other
file becomes a job in the cache's SQLite queue, which survives ``kill -9`` and reboots. On
start, and whenever a watched folder reappears, a catch-up scan queues what changed while
nobody watched; files younger than their quiet time go through the settler instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..audio import find_audio
from .events import is_ignored_name
from .links import inside

if TYPE_CHECKING:
    from ..cache import Cache
    from ..model import ModelSet
    from ..result import ModelIdentity
    from .links import LinkGuard
    from .roots import WatchedRoot
    from .settings import WatchSettings
    from .settle import Settler

log = logging.getLogger(__name__)

__all__ = ["SCAN_CHUNK", "Intake"]

SCAN_CHUNK = 500          # files per cache lookup in the catch-up scan


class Intake:
    """The daemon's part that turns settled or scanned files into queued jobs.

    A mixin of :class:`~tagger.watch.daemon.Daemon`; the attributes below are the daemon's
    (``_state_lock`` guards the state it shares with the workers'
    :class:`~tagger.watch.workers.Processing`).
    """

    cache: Cache
    settings: WatchSettings
    settler: Settler
    links: LinkGuard
    roots: list[WatchedRoot]
    identities: dict[str, ModelIdentity]
    models: ModelSet
    stopping: threading.Event
    wake: threading.Event
    _state_lock: threading.Lock
    _in_progress: set[str]  # paths in a worker's hands
    _owed: set[str]  # files whose tags could not be written yet: queued once settled

    def submit(self, paths: Sequence[str]) -> int:
        """Queue the settled ``paths`` that the cache does not already know as they are now
        (our own tag writes land here and stop). Returns how many were queued."""
        paths = self.links.filter(paths)
        with self._state_lock:  # a worker has it: what it writes is ours, not news
            busy = [p for p in paths if p in self._in_progress]
            paths = [p for p in paths if p not in self._in_progress]
            owed = {p for p in paths if p in self._owed}
            self._owed -= owed
        for path in busy:
            log.debug("%s: being tagged (our own write); not queued", path)
        hits = set(self.cache.lookup_many(paths, self.identities)) - owed
        for path in hits:
            log.debug("%s: unchanged since tagged; not queued", path)
        return self._enqueue([p for p in paths if p not in hits])

    def _enqueue(self, paths: Iterable[str]) -> int:
        queued = 0
        for path in paths:
            if self.cache.enqueue(path):
                queued += 1
                log.debug("queued %s", path)
        if queued:
            self.wake.set()
        return queued

    def catch_up(self, root: str) -> None:
        """Queue what changed below ``root`` while nobody watched: files the cache does not
        know as they are, except those already given up on in this very version. Files younger
        than the settle time go through the settler, as if an event had come. Files whose
        cached embeddings new heads can re-tag (no decoding) are queued as they are found;
        those that need decoding after the whole scan, so a new head reaches the library
        first."""
        failed = {j.path: j.updated_at.timestamp() for j in self.cache.failed_jobs()}
        # Already queued or in a worker's hands (a restart after a crash): a second job would
        # only find the cache hit its first one leaves.
        active = {j.path for state in ("pending", "running") for j in self.cache.recent_jobs(state)}
        quiet = self._quiet_for(root)
        started = time.monotonic()
        total = queued = settling = 0
        backbone = self.models.backbone.identity.sha256
        decode: list[str] = []
        for chunk in _chunks(find_audio([root]), SCAN_CHUNK):
            if self.stopping.is_set():
                return
            stats = _stats(self.links.filter(str(p) for p in chunk if not is_ignored_name(p)))
            total += len(stats)
            hits = self.cache.lookup_many(list(stats), self.identities, stats)
            now = time.time()
            old = []
            for path, st in stats.items():
                if (path in hits or path in active
                        or st.st_mtime <= failed.get(path, float("-inf"))):
                    continue
                if now - st.st_mtime < quiet:
                    self.settler.touch(path, settle=quiet)
                    settling += 1
                elif self.cache.embedding(path, backbone, st) is not None:
                    old.append(path)
                else:
                    decode.append(path)
            queued += self._enqueue(old)
        queued += self._enqueue(decode)
        log.info("catch-up scan of %s: %d audio files, %d queued, %d settling (%.1f s)", root,
                 total, queued, settling, time.monotonic() - started)

    def _quiet_for(self, path: str) -> float:
        """Quiet seconds for a file at or below ``path``: its (innermost) root's."""
        quiet = [(len(r.path), r.quiet) for r in self.roots
                 if r.quiet is not None and inside(path, r.path)]
        return max(quiet)[1] if quiet else self.settings.settle


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _stats(paths: Iterable[str]) -> dict[str, os.stat_result]:
    out = {}
    for path in paths:
        with contextlib.suppress(OSError):
            out[path] = os.stat(path)
    return out
