"""What ``genreml watch`` was asked to do (:class:`WatchSettings`), checked once, with the
timings derived from it: the main loop's tick and the quiet time of each kind of folder."""

from __future__ import annotations

import dataclasses

from .settle import quiet_time

__all__ = ["WatchSettings"]


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
        """Quiet seconds for files below a root (:func:`tagger.watch.settle.quiet_time`)."""
        return quiet_time(self.settle, polled, self.poll_interval, network, self.network_settle)
