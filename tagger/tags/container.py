"""An audio file's tag block, opened by the module that knows its container, and the checks
around it: open, plan as stored, verify a written file.

The container modules (:mod:`.id3`, :mod:`.vorbis`, :mod:`.mp4`) each keep the contract of
:mod:`.contract`: ``load(path, kind, options)`` returns a :class:`.contract.Container`, so
the module is chosen by the file's kind alone and used the same way whichever it is.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat

import mutagen
from mutagen import FileType

from . import id3, iff, mp4, vorbis
from .contract import Container, ContainerModule, Options
from .errors import TagError, errors
from .plan import FieldPlan, TagPlan

__all__ = ["apply", "open_tagged", "stat_regular", "verify"]

log = logging.getLogger(__name__)

_MODULES: dict[type[FileType], ContainerModule] = {
    kind: module for module in (id3, vorbis, mp4) for kind in module.KINDS}


def open_tagged(path: str, options: Options = Options()) -> Container:
    """Open ``path`` with the module of its container.

    Parameters
    ----------
    path : str
        The audio file.
    options : Options
        How its tag is read and written (ID3's version and v2.3 separator).

    Returns
    -------
    Container
        The file's tag block.

    Raises
    ------
    TagError
        Unsupported or corrupt file.
    """
    with errors(path, "cannot read tags"):
        if why := iff.truncation(path):  # WAV, AIFF
            raise TagError(path, f"truncated file, cannot be read or decoded ({why})")
        detected = mutagen.File(path)
        if detected is None:
            raise TagError(path, "unsupported format (not a recognised audio file)")
        kind = type(detected)
        module = _MODULES.get(kind)
        if module is None:
            raise TagError(path, f"unsupported format ({kind.__name__})")
        return module.load(path, kind, options)


def stat_regular(path: str) -> os.stat_result:
    """``os.stat`` of a regular, non-empty file; anything else is a :class:`TagError`.

    Never opens the file: opening a FIFO would block until someone writes into it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TagError(path, "no such file") from None
    except OSError as e:
        raise TagError(path, f"cannot stat: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise TagError(path, "not a regular file")
    if st.st_size == 0:
        raise TagError(path, "empty file")
    return st


def apply(tagged: Container, plan: TagPlan) -> TagPlan:
    """Set the planned fields on ``tagged``; return the plan as the container stores it."""
    if plan.genre.changed:
        tagged.set_genres(plan.genre.new)
    if plan.mood.changed:
        assert plan.mood.new is not None  # a plan never clears the mood
        tagged.set_mood(plan.mood.new)
    stored = tagged.read()
    if stored == plan.after:
        return plan
    log.info("%s: stored as %s (planned %s)", tagged.file.filename, stored, plan.after)
    return dataclasses.replace(plan, genre=FieldPlan("genre", plan.genre.old, stored.genres),
                               mood=FieldPlan("mood", plan.mood.old, stored.mood))


def verify(path: str, written: str, plan: TagPlan, others: list[str],
           options: Options) -> None:
    """Re-read ``written``: our fields exactly as planned, everything else as before.

    Parameters
    ----------
    path : str
        The file named in errors.
    written : str
        The file to check (the temporary copy, or ``path`` itself after an in-place write).
    plan : TagPlan
        What was written.
    others : list of str
        :meth:`.contract.Container.others` of the file before the write.
    options : Options
        How the file was written.
    """
    with errors(path, "verification failed: cannot re-read the written file"):
        tagged = open_tagged(written, options)
        got, now = tagged.read(), tagged.others()
    if got != plan.after:
        raise TagError(path, f"verification failed: wrote {plan.after}, read back {got}")
    if now != others:
        lost = [x for x in others if x not in now]
        gained = [x for x in now if x not in others]
        raise TagError(path, f"verification failed: other tags changed (was {_clip(lost)}, "
                             f"now {_clip(gained)})")


def _clip(items: list[str], width: int = 120) -> str:
    text = "; ".join(items) or "-"
    return text if len(text) <= width else text[: width - 3] + "..."
