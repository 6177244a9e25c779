"""Our hidden files next to a user's file, and cleaning up after a writer that was killed.

Two kinds, both in the file's own folder (the same file system, so a rename is atomic):

* a temporary copy ``.NAME.genreml-XXXXXXXX.tmp`` (:data:`TEMP_GLOB`): tagged, verified and
  renamed over the original, or removed;
* a backup ``.NAME.genreml-iINODE-XXXXXXXX.bak`` (:data:`BACKUP_GLOB`) of a file written in
  place: the original's bytes, kept until the in-place write is verified. ``INODE`` is the
  original's inode number, which an in-place write keeps, so the original is found again
  even when ``NAME`` had to be shortened.

Whoever creates one holds an exclusive ``flock`` on it for as long as it is in use; the
kernel drops the lock when that process dies, however it dies. :func:`cleanup_stale_temp`
therefore touches only files whose lock it can take (plus a few seconds' minimum age, for
the moment between creating a file and locking it):

* a stale temporary copy is removed (the original was never touched);
* a stale backup means an in-place write was interrupted, and the original may be half
  written. If the original is byte-identical to the backup, the backup is removed; otherwise
  the original's bytes are restored from the backup *in place* (same inode: owner, group,
  mode, xattrs and ACLs stay), checked, and then the backup is removed. The file is tagged
  again on the next run. If the original cannot be found (moved or deleted since) or the
  restore fails, the backup is left where it is and an error names both files.

Every removal and restore is logged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from .errors import FileChanged, TagError, errors

__all__ = ["BACKUP_GLOB", "TEMP_GLOB", "LockedFile", "cleanup_stale_temp", "is_temp_file",
           "restore_in_place", "same_bytes"]

log = logging.getLogger(__name__)

TEMP_GLOB = ".*.genreml-*.tmp"
BACKUP_GLOB = ".*.genreml-*.bak"
_INFIX = ".genreml-"
_NAME_BYTES = 180  # room for the infix, inode and random part within a 255-byte file name
_COPY_CHUNK = 1 << 20
_MIN_AGE = 5.0
_TEMP_ERRORS = {errno.EACCES: "read-only folder", errno.EPERM: "read-only folder",
                errno.EROFS: "read-only file system"}


class LockedFile:
    """A new hidden file next to ``path``, holding ``path``'s bytes, locked until closed.

    Parameters
    ----------
    path : str
        The original.
    suffix : {".tmp", ".bak"}
        A temporary copy, or a backup (whose name records the original's inode).
    """

    def __init__(self, path: str, suffix: str = ".tmp",
                 expect: os.stat_result | None = None) -> None:
        folder, name = os.path.split(path)
        short = os.fsencode(name)[:_NAME_BYTES].decode("utf-8", "ignore")  # a hint, not a key
        try:
            # Opened first: the copy is of this inode, whatever is renamed over it meanwhile.
            src = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise TagError(path, f"cannot read the file: {e.strerror}") from e
        with src:
            st = os.fstat(src.fileno())
            if expect is not None and _identity(st) != _identity(expect):
                raise FileChanged(path, "file changed since it was read; not written")
            infix = _INFIX + (f"i{st.st_ino}-" if suffix == ".bak" else "")
            try:
                self.fd, self.path = tempfile.mkstemp(prefix=f".{short}{infix}", suffix=suffix,
                                                      dir=folder)
            except OSError as e:
                reason = _TEMP_ERRORS.get(e.errno, "cannot create a temporary copy")
                raise TagError(path, f"{reason}: {e.strerror}") from e
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)  # ours while this process lives
                with errors(path, "cannot copy the file"), \
                        open(self.fd, "wb", closefd=False) as dst:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
                os.fsync(self.fd)
            except BaseException:
                self.discard()
                raise

    def rename(self, suffix: str) -> None:
        """Give the file another suffix (the lock stays: it is the same file)."""
        new = self.path[: -len(Path(self.path).suffix)] + suffix
        os.rename(self.path, new)
        self.path = new

    def discard(self) -> None:
        """Remove the file and release it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        """Release the lock (the file itself stays)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like one of our temporary copies or backups."""
    name = os.path.basename(path)
    return fnmatch.fnmatchcase(name, TEMP_GLOB) or fnmatch.fnmatchcase(name, BACKUP_GLOB)


def restore_in_place(original: str, backup: str) -> None:
    """Copy ``backup``'s bytes into ``original`` itself (same inode), sync and check them.

    Raises
    ------
    OSError
        The copy failed, or the original does not read back equal to the backup.
    """
    with open(backup, "rb") as src, open(original, "r+b") as dst:
        shutil.copyfileobj(src, dst, _COPY_CHUNK)
        dst.truncate()
        dst.flush()
        os.fsync(dst.fileno())
    if not same_bytes(original, backup):
        raise OSError(errno.EIO, f"{original} does not read back equal to {backup}")


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


def same_bytes(a: str, b: str) -> bool:
    """Whether two files hold the same bytes."""
    return os.path.getsize(a) == os.path.getsize(b) and _digest(a) == _digest(b)


def _digest(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def cleanup_stale_temp(folder: str | os.PathLike[str], min_age: float = _MIN_AGE) -> list[Path]:
    """Deal with the temporary copies and backups that dead writers left in ``folder``.

    Not recursive. A file whose writer still runs (its lock is held) is never touched; see
    the module's description for what happens to a backup.

    Parameters
    ----------
    folder : path-like
        The folder to clean.
    min_age : float
        Seconds since the file was last modified: a younger one may have been created a
        moment ago and not be locked yet.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed: list[Path] = []
    now = time.time()
    candidates = [*Path(folder).glob(TEMP_GLOB), *Path(folder).glob(BACKUP_GLOB)]
    for candidate in sorted(candidates):
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile, a link, or not ours to read
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            if candidate.suffix == ".bak" and not _settle_backup(candidate, st):
                continue
            candidate.unlink()
            removed.append(candidate)
            log.info("removed stale temporary file %s", candidate)
        except OSError as e:
            log.error("cannot clean up %s: %s", candidate, e.strerror or e)
        finally:
            os.close(fd)
    return removed


def _settle_backup(backup: Path, st: os.stat_result) -> bool:
    """Put the original back from a dead in-place writer's backup; whether to remove it."""
    original = _original_of(backup, st.st_dev)
    if original is None:
        log.error("%s is the backup of a file whose tagging was interrupted, but that file "
                  "is no longer in this folder; the backup is left in place", backup)
        return False
    if same_bytes(str(original), str(backup)):
        return True
    try:
        restore_in_place(str(original), str(backup))
    except OSError as e:
        log.error("%s: tagging was interrupted and restoring it from its backup %s failed "
                  "(%s); the backup is left in place", original, backup, e.strerror or e)
        return False
    log.warning("%s: tagging was interrupted; restored from its backup %s (it will be "
                "tagged again)", original, backup)
    return True


def _original_of(backup: Path, dev: int) -> Path | None:
    """The file a backup was made of: same folder, the inode recorded in its name."""
    name = backup.name
    start = name.rfind(_INFIX + "i")
    if start < 0:
        return None
    try:
        inode = int(name[start + len(_INFIX) + 1:].split("-", 1)[0])
    except ValueError:
        return None
    for entry in os.scandir(backup.parent):
        with contextlib.suppress(OSError):
            if entry.inode() == inode and entry.is_file(follow_symlinks=False) \
                    and entry.stat(follow_symlinks=False).st_dev == dev \
                    and entry.path != str(backup):
                return Path(entry.path)
    return None
