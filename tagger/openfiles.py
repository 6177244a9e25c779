"""Who still has a file open for writing: never replace a file that is being written.

A download, a ripper or a copy may keep a file open and idle for minutes between two writes;
replacing it by rename then cuts it off (the writer goes on writing into the unlinked inode).
Linux shows every process's open files under ``/proc/PID/fd`` and their open flags under
``/proc/PID/fdinfo/N``; a file open ``O_WRONLY`` or ``O_RDWR`` by any process we can see is
being written.

What cannot be seen: processes of other users when we are not root (their ``fd`` folders are
unreadable), and writers on other machines of a network file system. :func:`writers` then
says :data:`UNKNOWN` for the part it could not see, and callers fall back to a longer quiet
time and an identity check right before the rename.
"""

from __future__ import annotations

import dataclasses
import os

__all__ = ["OpenWriters", "writers"]

_ACCESS_MODE = 0o3  # O_ACCMODE
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


@dataclasses.dataclass(frozen=True)
class OpenWriters:
    """The result of a look at ``/proc``.

    Attributes
    ----------
    pids : tuple of int
        Processes (other than this one) seen holding the file open for writing.
    complete : bool
        Whether every process's open files could be read (root, or only our own processes
        running); if not, a writer may exist that we cannot see.
    """

    pids: tuple[int, ...]
    complete: bool

    @property
    def busy(self) -> bool:
        """Someone is seen writing the file."""
        return bool(self.pids)


def writers(path: str | os.PathLike[str], proc: str = "/proc",
            include_self: bool = False) -> OpenWriters:
    """The processes that hold ``path`` open for writing.

    Parameters
    ----------
    path : path-like
        The file (followed if a symlink). Matched by device and inode, so a writer that opened
        it under another name, or before a rename, is found too.
    proc : str
        Where procfs is mounted.
    include_self : bool
        Count this process's own descriptors (tests; the tagger's own temporary copies are
        other files).

    Returns
    -------
    OpenWriters
        ``complete=False`` where procfs is missing or some processes could not be inspected.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return OpenWriters((), True)
    except OSError:
        return OpenWriters((), False)  # cannot even see the file: cannot tell
    target = (st.st_dev, st.st_ino)
    me = os.getpid()
    try:
        entries = os.listdir(proc)
    except OSError:
        return OpenWriters((), False)
    found: list[int] = []
    complete = True
    for name in entries:
        if not name.isdigit() or (int(name) == me and not include_self):
            continue
        fd_dir = os.path.join(proc, name, "fd")
        try:
            fds = os.listdir(fd_dir)
        except FileNotFoundError:
            continue  # the process ended meanwhile
        except OSError:
            complete = False  # another user's process: cannot see its files
            continue
        if any(_writes(proc, name, fd, target) for fd in fds):
            found.append(int(name))
    return OpenWriters(tuple(found), complete)


def _writes(proc: str, pid: str, fd: str, target: tuple[int, int]) -> bool:
    try:
        st = os.stat(os.path.join(proc, pid, "fd", fd))  # follows the magic link to the file
    except OSError:
        return False
    if (st.st_dev, st.st_ino) != target:
        return False
    try:
        with open(os.path.join(proc, pid, "fdinfo", fd), encoding="ascii") as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & _ACCESS_MODE in _WRITE_MODES
    except (OSError, ValueError):
        pass
    return True  # open, flags unreadable: assume the worst
