"""Reading a file's genres and mood, and writing them back without harming anything else.

The normal road is a replace by rename: the file is copied to a hidden, locked temporary file
next to it (:class:`.tempfiles.LockedFile`), the copy is tagged, synced and verified (our
fields as planned; every other tag, the stream info and any ID3v1 block unchanged), given the
original's owner, group, mode and every extended attribute (ACLs included) and checked to
have them exactly (:func:`.fsmeta.carry_over`), and renamed over the original. Right before
the rename the original must still be the file that was read (inode, size and mtime as at
the start, and as the caller's ``expected``; else :class:`FileChanged`) and no process may
hold it open for writing (:func:`tagger.openfiles.writers`; else :class:`FileBusy`).

When the copy cannot be given the original's owner, group, mode or attributes exactly (a
non-root run on another user's file, an attribute namespace we may not set), renaming it
would change who owns the user's file or drop its attributes. Then genreml writes in place
after a verified backup (:mod:`.inplace`), or, with ``safe_only=True`` (``--safe-only``),
refuses with a :class:`TagError` and leaves the file as it was.

Whatever fails, the original is left as it was and a :class:`TagError` says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from .container import apply, open_tagged, stat_regular, verify
from .contract import V23_SEP, Options
from .errors import FileChanged, TagError, errors
from .fsmeta import carry_over, xattrs
from .guards import check_identity, check_not_busy, fsync, identity
from .inplace import write_in_place
from .plan import FileTags, Policy, TagPlan, plan_tags
from .tempfiles import LockedFile

__all__ = ["read_tags", "write_tags"]

log = logging.getLogger("tagger.tags")


def read_tags(path: str | os.PathLike[str], *, v23_sep: str = V23_SEP) -> FileTags:
    """The genres and mood in a file now.

    Parameters
    ----------
    path : path-like
        The audio file (a symlink is followed).
    v23_sep : str
        The separator an ID3v2.3 ``TCON`` is split on.

    Raises
    ------
    TagError
        Missing, empty, not a regular file, unsupported or corrupt file.
    """
    real = os.path.realpath(path)
    stat_regular(real)
    return open_tagged(real, Options(v23_sep=v23_sep)).read()


def write_tags(
    path: str | os.PathLike[str],
    genres: Iterable[str] | None,
    mood: str | None,
    policy: str | Policy = "fill",
    dry_run: bool = False,
    *,
    id3_version: int | None = None,
    v23_sep: str = V23_SEP,
    expected: os.stat_result | None = None,
    safe_only: bool = False,
    own: FileTags | None = None,
) -> TagPlan:
    """Plan and (unless ``dry_run``) safely write genres and mood into a file.

    Parameters
    ----------
    path : path-like
        The audio file; a symlink is followed and its target rewritten.
    genres : list of str
        Predicted genres, most probable first.
    mood : str or None
        Predicted mood.
    policy : str or Policy
        See :func:`plan_tags`.
    dry_run : bool
        Only plan; the file is not opened for writing.
    id3_version : {None, 3, 4}
        ID3 files only: ``None`` keeps the file's version (new tags are v2.4); ``3`` or ``4``
        converts when the file is written anyway.
    v23_sep : str
        ID3v2.3 only: the separator genres are joined with in ``TCON`` (and split on when
        read); Picard's option of the same name, by default ``"; "``.
    expected : os.stat_result, optional
        The file as it was when it was analysed: if its inode, size or modification time
        differ now or right before the replace, nothing is written (:class:`FileChanged`).
    safe_only : bool
        Refuse, rather than write in place, where a new copy cannot keep the file's owner,
        group, mode and extended attributes.
    own : FileTags, optional
        What genreml wrote into this file last time (see :func:`plan_tags`); its genres are
        compared as this container stores them, as the predicted ones are.

    Returns
    -------
    TagPlan
        What was (or would be) written, as the container stores it: in an ID3v2.3 tag a
        predicted ``"Rock; Pop"`` becomes two genres.

    Raises
    ------
    TagError
        Missing, empty, unsupported, corrupt, read-only file or folder, the copy did not
        verify, or (``safe_only``) the owner or attributes could not be kept. The original
        is unchanged.
    FileChanged
        The file is not ``expected``, or it changed during the write.
    FileBusy
        Another process has the file open for writing.
    """
    if id3_version not in (None, 3, 4):
        raise ValueError(f"id3_version must be None, 3 or 4, not {id3_version!r}")
    if isinstance(genres, str):
        raise TypeError("genres must be a list of strings, not a string")
    real = os.path.realpath(path)
    before = stat_regular(real)
    refs = [before] if expected is None else [expected, before]
    if expected is not None and identity(before) != identity(expected):
        raise FileChanged(real, "file changed since it was analysed; not written")
    options = Options(id3_version, v23_sep)
    tagged = open_tagged(real, options)
    if own is not None:  # as they were stored: an ID3v2.3 tag split them on its separator
        own = FileTags(tagged.normalize(list(own.genres)), own.mood)
    plan = plan_tags(tagged.read(), tagged.normalize(list(genres or [])), mood, policy, own)
    others = tagged.others() if plan.changed else []
    if plan.changed:
        plan = apply(tagged, plan)  # in memory only: what this container will store
    if not plan.changed or dry_run:
        log.debug("%s%s: %s", real, " (dry run)" if dry_run else "", "; ".join(plan.describe()))
        return plan
    _check_writable(real, before)
    _replace(real, before, refs, plan, others, options, safe_only)
    log.info("tagged %s: %s", real, "; ".join(f.describe() for f in plan.fields if f.changed))
    return plan


def _check_writable(path: str, st: os.stat_result) -> None:
    """Refuse read-only files and folders up front, by their mode bits.

    ``os.access`` says yes to root for any file, but a file (or folder) nobody may write is
    a user's way of saying "leave it alone", so the bits are honoured for root too.
    """
    if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
        raise TagError(path, "read-only file")
    folder = os.path.dirname(path)
    dst = os.stat(folder)
    if not dst.st_mode & 0o222 or not os.access(folder, os.W_OK | os.X_OK):
        raise TagError(path, "read-only folder (a temporary copy cannot be created next to it)")


def _replace(path: str, before: os.stat_result, refs: list[os.stat_result], plan: TagPlan,
             others: list[str], options: Options, safe_only: bool) -> None:
    """Tag a copy and rename it over ``path``, or fall back to writing in place."""
    copy = LockedFile(path, expect=before)
    try:
        with errors(path, "cannot write tags"):
            tagged = open_tagged(copy.path, options)
            apply(tagged, plan)
            tagged.save()
            fsync(copy.path)
        verify(path, copy.path, plan, others, options)
        with errors(path, "cannot keep the file's owner and attributes"):
            missing = carry_over(before, xattrs(path), copy.path)
        if not missing:
            check_identity(path, refs)
            check_not_busy(path)
            with errors(path, "cannot replace the file"):
                os.replace(copy.path, path)
    except TagError as e:
        copy.discard()
        raise type(e)(path, e.reason) from e  # name the original, not the temporary copy
    except BaseException:
        copy.discard()
        raise
    if missing:
        copy.discard()
        _in_place(path, refs, plan, others, options, safe_only, missing)
        return
    copy.close()
    if before.st_nlink > 1:
        log.warning("%s has %d hard links: the others keep the old tags", path, before.st_nlink)
    try:
        fsync(os.path.dirname(path))  # makes the rename itself durable
    except OSError as e:
        log.debug("%s: cannot sync folder: %s", path, e)


def _in_place(path: str, refs: list[os.stat_result], plan: TagPlan, others: list[str],
              options: Options, safe_only: bool, missing: list[str]) -> None:
    what = ", ".join(missing)
    if safe_only:
        raise TagError(path, f"cannot keep {what} on a new copy (running as uid "
                             f"{os.geteuid()}); not written (without --safe-only genreml "
                             f"writes in place after a verified backup)")
    log.info("%s: a new copy cannot keep %s; writing in place after a backup", path, what)
    write_in_place(path, refs, plan, others, options)
