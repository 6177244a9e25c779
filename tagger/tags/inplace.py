"""Writing a file in place, after a verified backup, when a new copy could not stand in for it.

Used when the tagged copy cannot be given the original's owner, group, mode or extended
attributes exactly (a non-root run on someone else's file, a namespace we may not set):
renaming it over the original would change who owns the user's file or drop attributes.
mutagen's own save writes into the original (same inode), so all of those stay.

Steps: copy the original to a backup ``.NAME.genreml-iINODE-XXXX.bak`` next to it (locked,
synced, compared byte for byte with the original), check the original is still the file that
was analysed and nobody has it open for writing, let mutagen save into the original, sync and
verify it. On any failure the backup's bytes are copied back into the original (in place) and
checked; then the backup is removed. If this process is killed meanwhile, the backup stays,
and :func:`tagger.tags.cleanup_stale_temp` restores the original from it on the next run.
"""

from __future__ import annotations

import logging
import os

from .container import apply, open_tagged, verify
from .contract import Options
from .errors import TagError, errors
from .guards import check_identity, check_not_busy, fsync
from .plan import TagPlan
from .tempfiles import LockedFile, restore_in_place, same_bytes

__all__ = ["write_in_place"]

log = logging.getLogger(__name__)


def write_in_place(path: str, refs: list[os.stat_result], plan: TagPlan, others: list[str],
                   options: Options) -> None:
    """Tag ``path`` itself, with a verified backup to fall back on.

    Parameters
    ----------
    path : str
        The original (a real path, not a link).
    refs : list of os.stat_result
        Identities the file must still have right before it is written.
    plan, others, options
        What to write, and what verification compares (see :func:`.container.verify`).

    Raises
    ------
    TagError
        Nothing was written (or what was written has been undone), including
        :class:`FileChanged` and :class:`FileBusy`.
    """
    backup = LockedFile(path, ".bak", expect=refs[-1])
    try:
        if not same_bytes(path, backup.path):
            raise TagError(path, "the backup copy does not match the file; not written")
        check_identity(path, refs)
        check_not_busy(path)
    except BaseException:
        backup.discard()
        raise
    try:
        with errors(path, "cannot write tags in place"):
            tagged = open_tagged(path, options)
            apply(tagged, plan)
            tagged.save()
            fsync(path)
        verify(path, path, plan, others, options)
    except BaseException as failure:
        _undo(path, backup, failure)
        raise
    backup.discard()
    log.debug("%s: written in place", path)


def _undo(path: str, backup: LockedFile, failure: BaseException) -> None:
    try:
        restore_in_place(path, backup.path)
    except OSError as e:
        backup.close()  # the backup stays: it holds the only good copy
        raise TagError(path, f"writing in place failed ({failure}) and restoring the file from "
                             f"its backup {backup.path} failed too ({e.strerror or e}); the "
                             f"backup is kept") from failure
    backup.discard()
    log.info("%s: restored from its backup after a failed in-place write", path)
