"""A file's owner, group, mode and extended attributes (ACLs included), carried to a copy.

A tagged copy renamed over the original must look like the original to everyone else: the
same owner and group, the same permission bits, and every extended attribute the original
has. POSIX ACLs are the ``system.posix_acl_access`` (and, for folders,
``system.posix_acl_default``) attributes, so copying every attribute carries them too;
SELinux labels (``security.selinux``) and capabilities likewise.

:func:`carry_over` sets them on the copy and then reads them back: whatever could not be
set exactly (not root and the file is someone else's, an attribute namespace this process
may not set, a file system without xattrs) is reported, and the caller does not rename.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import stat

__all__ = ["carry_over", "describe_owner", "xattrs"]

_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP)


def xattrs(path: str) -> dict[str, bytes]:
    """Every extended attribute of ``path`` this process can read (``{}`` where the file
    system has none). ``trusted.*`` attributes are visible to root only."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NO_XATTRS:
            return {}
        raise
    out = {}
    for name in names:
        with contextlib.suppress(OSError):  # removed meanwhile, or unreadable
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def carry_over(st: os.stat_result, attrs: dict[str, bytes], copy: str) -> list[str]:
    """Give ``copy`` the owner, group, mode and xattrs of a file, then check it has them.

    Parameters
    ----------
    st : os.stat_result
        The original's ``stat``.
    attrs : dict
        The original's extended attributes (:func:`xattrs`).
    copy : str
        The new file.

    Returns
    -------
    list of str
        What the copy does not have exactly (empty when it is a faithful stand-in).
    """
    # chown first (it clears set-id bits and capabilities), then the mode, then the
    # attributes: an ACL also sets the group bits, which it must agree with.
    with contextlib.suppress(OSError):
        os.chown(copy, st.st_uid, st.st_gid)
    with contextlib.suppress(OSError):
        os.chmod(copy, stat.S_IMODE(st.st_mode))
    for name, value in attrs.items():
        with contextlib.suppress(OSError):
            os.setxattr(copy, name, value, follow_symlinks=False)
    with contextlib.suppress(OSError):  # e.g. an ACL the folder's default ACL gave the copy
        for name in set(xattrs(copy)) - set(attrs):
            with contextlib.suppress(OSError):
                os.removexattr(copy, name, follow_symlinks=False)
    now = os.stat(copy)
    missing = []
    if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid):
        missing.append(f"owner {describe_owner(st)}")
    if stat.S_IMODE(now.st_mode) != stat.S_IMODE(st.st_mode):
        missing.append(f"mode {stat.S_IMODE(st.st_mode):o}")
    try:
        have = xattrs(copy)
    except OSError:
        have = {}
    differ = sorted(set(attrs) ^ set(have) | {k for k in attrs if have.get(k) != attrs[k]})
    if differ:
        missing.append("xattrs " + ", ".join(differ))
    return missing


def describe_owner(st: os.stat_result) -> str:
    """``user:group`` by name where known, else by number."""
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"
