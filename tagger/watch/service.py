"""What makes ``genreml watch`` a well-behaved service: one daemon per cache, log lines the
journal understands, and systemd told how the daemon is doing.

The lock
    An exclusive ``flock`` on ``<cache>.watch.lock`` holding the daemon's pid: two daemons on
    one cache would hand each other's running jobs back on start. ``genreml status`` reads the
    pid from it (:func:`lock_owner`).
Logging
    One line per file at INFO; under systemd (stderr is the stream ``$JOURNAL_STREAM`` names)
    ``<N>`` syslog priorities and no timestamps, since the journal adds its own.
sd_notify
    The systemd notification protocol (``sd_notify(3)``), without libsystemd. A service
    started with ``Type=notify`` finds a datagram socket in ``$NOTIFY_SOCKET`` (a path, or
    ``@name`` for an abstract socket) and sends it newline-separated ``KEY=value`` lines:
    ``READY=1`` once it serves, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` at
    least every ``$WATCHDOG_USEC`` microseconds when ``WatchdogSec=`` is set, ``STOPPING=1`` on
    the way out. Outside systemd the variables are absent and every call is a no-op, so the
    daemon needs no special case.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from ..report import LineFormatter

log = logging.getLogger(__name__)

__all__ = ["DaemonError", "DaemonLock", "JournalFormatter", "Notifier", "configure_logging",
           "lock_owner"]


class DaemonError(RuntimeError):
    """The daemon cannot start (e.g. another one uses the same cache)."""



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


# --------------------------------------------------------------------------- sd_notify


def _address(value: str | None) -> str | bytes | None:
    """The ``sendto`` address of ``$NOTIFY_SOCKET``, or None when absent or unsupported."""
    if not value:
        return None
    if value.startswith("@"):  # abstract namespace: a leading NUL byte instead of the '@'
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.debug("NOTIFY_SOCKET=%r: unsupported address, not notifying systemd", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC`` (as ``sd_watchdog_enabled``
    advises), or None when the watchdog is off or meant for another process."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """Send state changes to the service manager, when there is one.

    Parameters
    ----------
    environ : mapping, optional
        Where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (default:
        ``os.environ``).

    Notes
    -----
    Sending never raises: a service must not die because its manager went away.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = _watchdog_interval(env) if self.address else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; returns whether it was sent."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block: a manager that does not read (its queue is full) must not stall the
            # service's main loop; a lost STATUS or WATCHDOG datagram is harmless.
            self._sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as err:
            log.debug("sd_notify %r failed: %s", lines, err)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (and a status line)."""
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=text``: the line ``systemctl status`` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: still alive."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutting down on request."""
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment.
    return " ".join(text.split())
