"""The systemd notification protocol (``sd_notify(3)``), without libsystemd.

A service started with ``Type=notify`` finds a datagram socket in ``$NOTIFY_SOCKET`` (a path,
or ``@name`` for an abstract socket) and sends it newline-separated ``KEY=value`` lines:
``READY=1`` once it serves, ``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` at least
every ``$WATCHDOG_USEC`` microseconds when ``WatchdogSec=`` is set, ``STOPPING=1`` on the way
out. Outside systemd the variables are absent and every call is a no-op, so the daemon needs
no special case.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

__all__ = ["Notifier"]


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
