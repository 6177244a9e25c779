"""``genreml watch``: a long-lived service that tags music as it arrives.

How a file travels, and where each step lives:

1. **Events** (:mod:`~tagger.watch.events`, :mod:`~tagger.watch.roots`,
   :mod:`~tagger.watch.mounts`). watchdog watches every folder recursively: inotify where the
   kernel reports changes, a polling observer with ``--poll`` or when the folder lies on a
   network or FUSE file system (NFS, SMB/CIFS, sshfs, rclone, mergerfs...), where inotify sees
   only local writes. Temporary names and non-audio files are ignored; a rename from such a
   name to ``song.mp3`` is a new file. Paths whose real path leaves every watched root (a
   symlink to a file or folder elsewhere) are skipped unless ``--follow-links``
   (:mod:`~tagger.watch.links`).
2. **Settling** (:mod:`~tagger.watch.settle`). A file is ready when its size and mtime have not
   changed for its quiet time (``settle`` seconds; on polled roots two poll intervals more,
   on network roots at least ``network_settle``) and no process is seen holding it open for
   writing, however long that writer stays idle. Where writers cannot all be seen and
   inotify said "written, not closed", it waits up to :data:`~tagger.watch.settle.OPEN_GRACE`.
   Empty files keep waiting.
3. **Queue** (:mod:`~tagger.watch.intake`). A settled file the cache knows as it is now is
   skipped (this stops our own tag writes from looping); any other becomes a job in the
   cache's SQLite queue, which survives ``kill -9`` and reboots. A catch-up scan queues what
   changed while nobody watched: on start, and whenever a watched folder reappears.
4. **Workers** (:mod:`~tagger.watch.workers`) tag the jobs' files on one shared model set,
   retry failures with back-off, and send a file being written back to settling; with
   ``--beets`` its beets item is updated too (:mod:`~tagger.watch.beetslib`).

The daemon (:mod:`~tagger.watch.daemon`) runs the main loop, starts and stops the threads and
reports its status; :mod:`~tagger.watch.service` holds what makes it a service: one daemon
per cache (a lock file next to the cache, ``cache.db.watch.lock``, holding its pid), journald
logging and ``sd_notify`` (``READY=1``, ``STATUS=``, ``WATCHDOG=1``). What the user asked for
is a :class:`~tagger.watch.settings.WatchSettings`.
"""

from __future__ import annotations

from .beetslib import BeetsLibrary
from .daemon import Daemon
from .events import is_ignored_name
from .links import LinkGuard
from .mounts import mount_fstype, needs_polling
from .service import (DaemonError, DaemonLock, JournalFormatter, Notifier, configure_logging,
                      lock_owner)
from .settings import WatchSettings
from .settle import OPEN_GRACE, Settler, quiet_time

__all__ = [
    "OPEN_GRACE",
    "BeetsLibrary",
    "Daemon",
    "DaemonError",
    "DaemonLock",
    "JournalFormatter",
    "LinkGuard",
    "Notifier",
    "Settler",
    "WatchSettings",
    "configure_logging",
    "is_ignored_name",
    "lock_owner",
    "mount_fstype",
    "needs_polling",
    "quiet_time",
]
