"""Which file system a watched folder lies on, from the mount table.

inotify reports only the changes the local kernel makes: on a network or FUSE file system
(NFS, SMB/CIFS, sshfs, rclone, mergerfs...) a write by another client of the share is never
heard, so such folders are polled, and their files given a longer quiet time. Kept apart from
the watching itself so it can be tested on a mount table written by hand.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

__all__ = ["LOCAL_FUSE", "NETWORK_FSTYPES", "mount_fstype", "needs_polling"]

# File systems where inotify misses changes made elsewhere (another client of the share).
NETWORK_FSTYPES = frozenset({"nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "ncpfs", "afs",
                             "9p", "ceph", "glusterfs", "lustre", "davfs", "fuse", "sshfs"})
# fuseblk is a local disk through FUSE (ntfs-3g, exfat-fuse): all writes pass the local
# kernel, so inotify sees them.
LOCAL_FUSE = frozenset({"fuseblk"})


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

