"""``genreml watch``: a long-lived service that tags music as it arrives.

How a file travels
------------------
1. **Events.** watchdog watches every folder recursively: inotify where the kernel reports
   changes, a polling observer with ``--poll`` or when the folder lies on a network or FUSE file
   system (NFS, SMB/CIFS, sshfs, rclone, mergerfs...), where inotify sees only local writes.
   Temporary names (``.part``, ``.crdownload``, ``.!qB``, a ``~`` suffix, dot-files, genreml's
   own ``.NAME.genreml-XXXX.tmp``) and non-audio files are ignored; a rename from such a name
   to ``song.mp3`` is a new file.
   Paths whose real path leaves every watched root (a symlink to a file or folder
   elsewhere) are skipped unless ``--follow-links`` (:mod:`tagger.links`).
2. **Settling** (:mod:`tagger.settle`). A file is ready when its size and mtime have not
   changed for its quiet time (``settle`` seconds; on polled roots two poll intervals more,
   on network roots at least ``network_settle``) and no process is seen holding it open for
   writing, however long that writer stays idle. Where writers cannot all be seen and
   inotify said "written, not closed", it waits up to :data:`~tagger.settle.OPEN_GRACE`.
   Empty files keep waiting.
3. **Queue.** A settled file whose cached size/mtime still match (:meth:`Cache.lookup_many`)
   is skipped: this is what stops our own tag writes (an atomic rename over the file) from
   looping. Any other file becomes a job in the cache's SQLite queue, which survives ``kill -9``
   and reboots.
4. **Workers.** ``workers`` threads claim jobs and run :meth:`Tagger.tag` (the code
   ``genreml tag`` runs) on one shared :class:`ModelSet`: onnxruntime's ``run`` is thread-safe
   and releases the GIL, as do decoding and resampling, so threads overlap where it matters
   without loading the models once per worker. A failure retries with exponential back-off
   and, after ``max_attempts``, stays ``failed`` with its error (``genreml status``). A file
   found open for writing or changed at write-back time (:class:`~tagger.tags.FileBusy`,
   :class:`~tagger.tags.FileChanged`) is no failure: it goes back to settling and is queued
   again once it is quiet, whatever the cache says.

On start, jobs left ``running`` by a dead daemon go back to pending and a catch-up scan queues
what changed while nobody watched (also whenever a watched folder reappears, e.g. a share
mounted again). SIGTERM/SIGINT stop the daemon within a few seconds: a file in progress is
finished or, after :attr:`WatchSettings.stop_grace`, abandoned back to the queue (tag writes
are atomic, so never half-written). systemd is told ``READY=1``, ``STATUS=`` and
``WATCHDOG=1`` (:mod:`tagger.sdnotify`).

One daemon per cache: a lock file next to the cache (``cache.db.watch.lock``) holds its pid.
A cache file deleted or replaced under the running daemon is noticed on the next tick: a
fresh one is created (:meth:`Cache.recreate_if_missing`) and every root is scanned again.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fcntl
import logging
import os
import queue
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from .audio import AudioError, find_audio, is_audio_path
from .links import LinkGuard, inside
from .report import LineFormatter, failure_reason, skip_reason
from .sdnotify import Notifier
from .settle import Settler, quiet_time
from .tags import FileBusy, FileChanged, TagError, is_temp_file

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver, ObservedWatch

    from .cache import Cache, Job
    from .tagging import Outcome, Tagger

log = logging.getLogger(__name__)

# "Not yet", not a failure: the file is being written, or changed since its analysis began.
NOT_YET = (FileBusy, FileChanged)

__all__ = [
    "BeetsLibrary",
    "Daemon",
    "DaemonError",
    "DaemonLock",
    "JournalFormatter",
    "Notifier",
    "Settler",
    "WatchSettings",
    "configure_logging",
    "is_ignored_name",
    "lock_owner",
    "mount_fstype",
    "needs_polling",
]

# Suffixes of files still being downloaded or written (lower-case): browsers, download
# managers, torrent clients, rsync/office-style temporaries.
TEMP_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".opdownload", ".tmp",
                 ".temp", ".!qb", ".!ut", ".aria2", ".filepart")
# File systems where inotify misses changes made elsewhere (another client of the share).
NETWORK_FSTYPES = frozenset({"nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "ncpfs", "afs",
                             "9p", "ceph", "glusterfs", "lustre", "davfs", "fuse", "sshfs"})
# fuseblk is a local disk through FUSE (ntfs-3g, exfat-fuse): all writes pass the local
# kernel, so inotify sees them.
LOCAL_FUSE = frozenset({"fuseblk"})
SCAN_CHUNK = 500          # files per cache lookup in the catch-up scan
IDLE_WAIT = 1.0           # seconds an idle worker sleeps before looking for due retries
STATUS_EVERY = 2.0        # seconds between STATUS= updates
PRUNE_EVERY = 6 * 3600.0  # seconds between deleting old done jobs
MAX_LOOP_ERRORS = 20      # main-loop failures in a row before the daemon gives up


class DaemonError(RuntimeError):
    """The daemon cannot start (e.g. another one uses the same cache)."""


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class WatchSettings:
    """What ``genreml watch`` was asked to do.

    Parameters
    ----------
    settle : float
        Seconds a file's size and mtime must stay unchanged before it is queued.
    poll : bool
        Poll every folder instead of using inotify.
    poll_interval : float
        Seconds between two polls of a folder.
    workers : int
        Files analysed at once (threads sharing one loaded model set).
    max_attempts : int
        Tries per file before its job stays failed.
    retry_delay : float
        Seconds before the first retry; doubled for every further one.
    stop_grace : float
        Seconds a file in progress may take to finish after SIGTERM before it is abandoned
        to the queue.
    network_settle : float
        Quiet seconds for files on a network or FUSE file system (NFS, SMB, sshfs...), where
        a writer on another machine can neither be seen nor heard.
    follow_links : bool
        Tag files reached through symlinks that lead out of every watched folder (default:
        skip them).
    """

    settle: float = 5.0
    poll: bool = False
    poll_interval: float = 10.0
    workers: int = 1
    max_attempts: int = 5
    retry_delay: float = 30.0
    stop_grace: float = 3.0
    network_settle: float = 60.0
    follow_links: bool = False

    def __post_init__(self) -> None:
        checks = [(self.settle >= 0, "--settle must be >= 0"),
                  (self.network_settle >= 0, "--network-settle must be >= 0"),
                  (self.poll_interval > 0, "--poll-interval must be > 0"),
                  (self.workers >= 1, "--workers must be >= 1"),
                  (self.max_attempts >= 1, "--max-attempts must be >= 1"),
                  (self.retry_delay >= 0, "--retry-delay must be >= 0"),
                  (self.stop_grace >= 0, "--stop-grace must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def tick(self) -> float:
        """Seconds between two passes of the main loop: a fraction of the settle time."""
        return min(0.5, max(self.settle / 4, 0.05))

    def quiet_time(self, polled: bool, network: bool) -> float:
        """Quiet seconds for files below a root (:func:`tagger.settle.quiet_time`)."""
        return quiet_time(self.settle, polled, self.poll_interval, network, self.network_settle)


# --------------------------------------------------------------------------- file names


def is_ignored_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a file that is not (yet) a finished track: a dot-file (which
    includes genreml's own temporary copies), a ``~`` backup or a download in progress."""
    name = os.path.basename(os.fspath(path))
    lower = name.lower()
    return (name.startswith(".") or name.endswith("~") or is_temp_file(name)
            or lower.endswith(TEMP_SUFFIXES))


def _is_candidate(path: str, root: str) -> bool:
    """An audio file below ``root`` that :func:`find_audio` would list: no hidden part."""
    if not is_audio_path(path) or is_ignored_name(path):
        return False
    rel = os.path.relpath(path, root)
    return not rel.startswith("..") and not any(p.startswith(".") for p in rel.split(os.sep))


# --------------------------------------------------------------------------- mounts


def _unescape_mount(field: str) -> str:
    """``/proc/mounts`` writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_fstype(path: str | os.PathLike[str], mounts: str | os.PathLike[str] = "/proc/self/mounts"
                 ) -> str | None:
    """The file system type of the mount holding ``path`` (the longest mount point that
    contains its real path), or None when the mount table cannot be read."""
    real = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open(mounts, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = _unescape_mount(fields[1])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):  # later mounts shadow earlier ones
                    best, fstype = point, fields[2]
    except OSError as err:
        log.debug("cannot read %s: %s", mounts, err)
    return fstype


def needs_polling(path: str | os.PathLike[str],
                  mounts: str | os.PathLike[str] = "/proc/self/mounts") -> str | None:
    """The network/FUSE file system type of ``path`` when inotify cannot be trusted there,
    else None."""
    fstype = mount_fstype(path, mounts)
    if fstype is None or fstype in LOCAL_FUSE:
        return None
    base = fstype.split(".", 1)[0]  # fuse.sshfs, fuse.rclone, fuse.mergerfs -> fuse
    return fstype if fstype in NETWORK_FSTYPES or base in NETWORK_FSTYPES else None


# --------------------------------------------------------------------------- events


class _EventHandler(FileSystemEventHandler):
    """Turns watchdog events under one root into :class:`Settler` touches."""

    def __init__(self, root: str, watched: str, settler: Settler, close_events: bool,
                 on_root_gone: Callable[[], None], settle: float | None = None) -> None:
        self.root = root
        self.watched = watched  # what the observer watches: the root's real path if a link
        self.settler = settler
        self.settle = settle  # quiet seconds below this root (None: the settler's)
        self.close_events = close_events
        self.on_root_gone = on_root_gone

    def _translate(self, raw: str | bytes) -> str:
        """An event path as below the root we were given (not the symlink's target)."""
        path = os.fsdecode(raw)
        if self.watched != self.root and (path == self.watched
                                          or path.startswith(self.watched + os.sep)):
            path = self.root + path[len(self.watched):]
        return path

    def _path(self, raw: str | bytes) -> str | None:
        """The event's file if it is one we tag, else None."""
        path = self._translate(raw)
        return path if _is_candidate(path, self.root) else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an event must never kill the observer thread
            log.exception("cannot handle %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, (DirDeletedEvent, DirMovedEvent)):
            if os.fsdecode(event.src_path) == self.watched:
                self.on_root_gone()  # watchdog stops watching it; a new folder needs a new watch
            # The files of a folder moved within the tree come as their own move events.
            self.settler.forget_under(self._translate(event.src_path))
            return
        if event.is_directory:
            return
        src = self._path(event.src_path)
        if isinstance(event, FileMovedEvent):
            if src is not None:
                self.settler.forget(src)
            dest = self._path(event.dest_path) if event.dest_path else None
            if dest is not None:  # renamed into place: complete (song.mp3.part -> song.mp3)
                self.settler.touch(dest, writing=False, settle=self.settle)
        elif src is None:
            return
        elif isinstance(event, FileDeletedEvent):
            self.settler.forget(src)
        elif isinstance(event, FileClosedEvent):
            self.settler.touch(src, writing=False, settle=self.settle)
        elif isinstance(event, FileModifiedEvent):
            self.settler.touch(src, writing=True if self.close_events else None,
                               settle=self.settle)
        elif isinstance(event, FileCreatedEvent):
            # a hard link or a move from outside never writes
            self.settler.touch(src, settle=self.settle)


# --------------------------------------------------------------------------- watched roots


class _Root:
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
        return self.watch is not None

    def mark_lost(self) -> None:
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
        real = os.path.realpath(self.path)
        network = needs_polling(real)
        kinds = ["polling"] if self.force_poll or network else ["native", "polling"]
        for kind in kinds:
            observer = daemon.observer(kind)
            close_events = type(observer).__name__.startswith("Inotify")
            quiet = daemon.settings.quiet_time(kind == "polling", network is not None)
            handler = _EventHandler(self.path, real, daemon.settler, close_events,
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
        if self.watch is not None and self.observer is not None:
            with contextlib.suppress(KeyError, RuntimeError):
                self.observer.unschedule(self.watch)
        self.watch = self.observer = None


# --------------------------------------------------------------------------- the lock


def _lock_path(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".watch.lock")


class DaemonLock:
    """An exclusive ``flock`` on ``<cache>.watch.lock``: one daemon per cache (two would hand
    each other's running jobs back on start). The kernel drops it when the process dies."""

    def __init__(self, cache_path: Path) -> None:
        self.cache_path = cache_path
        self.path = _lock_path(cache_path)
        self._file: TextIO | None = None

    def acquire(self) -> None:
        f = open(self.path, "a+", encoding="ascii")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise DaemonError(f"another genreml watch (pid {pid}) uses the cache "
                              f"{self.cache_path}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def lock_owner(cache_path: Path) -> int | None:
    """The pid of the ``genreml watch`` using ``cache_path``, or None when none runs."""
    path = _lock_path(cache_path)
    try:
        f = open(path, encoding="ascii")
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


# --------------------------------------------------------------------------- beets


class BeetsLibrary:
    """Mirror each tagged file's result into its beets item, through the genreml beets plugin
    (:meth:`beetsplug.genreml.GenremlPlugin` fields: ``genres``, ``mood``, ``genreml_*`` and
    one float per label).

    The library and plugin configuration come from beets' own config (``$BEETSDIR`` or
    ``~/.config/beets``). The plugin is told to use the daemon's models, so its per-label
    fields match the results. Only the library is updated: the daemon already wrote the file's
    tags, and beets notices the new mtime as it does after any outside edit.

    Raises
    ------
    DaemonError
        beets cannot open its library.
    """

    def __init__(self, models: Path | None = None, device: str = "auto",
                 threshold: float | None = None, max_genres: int | None = None,
                 policy: str = "fill") -> None:
        from beets import config, library, plugins

        overrides: dict[str, Any] = {"device": device, "policy": policy, "auto": False}
        if models is not None:
            overrides["models"] = str(Path(models).resolve())
        if threshold is not None:
            overrides["threshold"] = threshold
        if max_genres is not None:
            overrides["max_genres"] = max_genres
        config["genreml"].set(overrides)  # before the plugin is created and reads them
        plugins.load_plugins()
        plugin = next((p for p in plugins.find_plugins() if p.name == "genreml"), None)
        if plugin is None:  # tagger never imports beetsplug: beets loads it from its config
            raise DaemonError("--beets needs the genreml plugin in beets' config "
                              "(plugins: genreml)")
        self.plugin = plugin
        try:
            self.lib = library.Library(config["library"].as_path(),
                                       config["directory"].as_filename())
        except Exception as err:
            raise DaemonError(f"cannot open the beets library: {err}") from err
        self._lock = threading.Lock()
        # beets keeps the library folder in a context variable (paths inside it are stored
        # relative); a worker thread starts with an empty context, so updates run in this one
        # (one at a time: a context cannot be entered by two threads at once).
        self._context = contextvars.copy_context()
        log.info("beets library %s", os.fsdecode(self.lib.path))

    def update(self, outcome: Outcome) -> bool:
        """Set the fields of the item at ``outcome.path`` as ``beet genreml`` does; returns
        whether the file is in the library."""
        with self._lock:
            return self._context.run(self._update, outcome)

    def _update(self, outcome: Outcome) -> bool:
        from beets.dbcore.query import PathQuery

        item = self.lib.items(PathQuery("path", os.fsencode(outcome.path))).get()
        if item is None:
            log.debug("%s is not in the beets library", outcome.path)
            return False
        changed = self.plugin.apply_result(item, outcome.result, self.plugin.policy())
        item.store()
        log.debug("beets item %s: %s", item.id, ", ".join(changed) or "unchanged")
        return True


# --------------------------------------------------------------------------- logging


class JournalFormatter(LineFormatter):
    """``<6>name: message``: journald reads the syslog priority from the prefix and adds its
    own timestamp."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                  logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {super().format(record)}"


def _stderr_is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM`` holds
    its ``device:inode``)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def configure_logging(verbose: int = 0, stream: TextIO | None = None) -> None:
    """Logging for a service: INFO (one line per file) by default, DEBUG with ``-v``;
    journald-style ``<N>`` priorities without timestamps under systemd, timestamps otherwise.
    """
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if _stderr_is_journal(stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # watchdog's and beets' chatter, and tagger.tags' line per write (our one line per file
    # says it): only with -v (-vv for their debug output).
    chatter = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    for name in ("watchdog", "tagger.tags", "beets"):
        logging.getLogger(name).setLevel(chatter)
    logging.getLogger("numba").setLevel(logging.WARNING)  # JIT internals, pages of them


# --------------------------------------------------------------------------- workers


def _describe(outcome: Outcome) -> str:
    genres = ", ".join(g for g, _ in outcome.result.genres) or "-"
    mood = outcome.result.emotion[0] if outcome.result.emotion else "-"
    return f"{outcome.status} {outcome.path}: {genres} | {mood} ({outcome.source})"


class _Worker(threading.Thread):
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


class _Scanner(threading.Thread):
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


# --------------------------------------------------------------------------- the daemon


class Daemon:
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
        self.roots = [_Root(path, self.settings.poll)
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
        self._workers: list[_Worker] = []
        self._scanner = _Scanner(self)
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
        self._workers = [_Worker(self, i) for i in range(self.settings.workers)]
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

        from .predict import Analyzer

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

    # -- intake

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
        than the settle time go through the settler, as if an event had come."""
        failed = {j.path: j.updated_at.timestamp() for j in self.cache.failed_jobs()}
        # Already queued or in a worker's hands (a restart after a crash): a second job would
        # only find the cache hit its first one leaves.
        active = {j.path for state in ("pending", "running") for j in self.cache.recent_jobs(state)}
        quiet = self._quiet_for(root)
        started = time.monotonic()
        total = queued = settling = 0
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
                else:
                    old.append(path)
            queued += self._enqueue(old)
        log.info("catch-up scan of %s: %d audio files, %d queued, %d settling (%.1f s)", root,
                 total, queued, settling, time.monotonic() - started)

    def _quiet_for(self, path: str) -> float:
        """Quiet seconds for a file at or below ``path``: its (innermost) root's."""
        quiet = [(len(r.path), r.quiet) for r in self.roots
                 if r.quiet is not None and inside(path, r.path)]
        return max(quiet)[1] if quiet else self.settings.settle

    # -- work

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
