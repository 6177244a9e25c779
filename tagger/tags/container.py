"""An audio file's tag block, bound to the module that knows its container, and the checks
around it: open, plan as stored, verify a written file.

The container modules (:mod:`.id3`, :mod:`.vorbis`, :mod:`.mp4`) each offer ``load``,
``read``, ``set_genres``, ``set_mood``, ``others`` and ``save``; :class:`Tagged` binds one
open file to its module and the options it is written with.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from typing import Any

import mutagen
from mutagen import FileType

from . import id3, iff, mp4, vorbis
from .errors import TagError, errors
from .plan import FieldPlan, FileTags, TagPlan

__all__ = ["Tagged", "apply", "open_tagged", "stat_regular", "verify"]

log = logging.getLogger(__name__)

_MODULES = {kind: module for module in (id3, vorbis, mp4) for kind in module.KINDS}


@dataclasses.dataclass
class Tagged:
    """An open file bound to its container module (and, for ID3, how its tag is written)."""

    file: FileType
    module: Any
    options: dict[str, Any]

    def read(self) -> FileTags:
        return FileTags(*self.module.read(self.file, **self.options))

    def normalize(self, genres: list[str]) -> list[str]:
        """Predicted genres as this container stores them (an ID3v2.3 tag splits them)."""
        normalize = getattr(self.module, "normalize", None)
        return normalize(genres, **self.options) if normalize else list(genres)

    def set_genres(self, genres: list[str]) -> None:
        self.module.set_genres(self.file, genres, **self.options)

    def set_mood(self, mood: str) -> None:
        self.module.set_mood(self.file, mood, **self.options)

    def others(self) -> list[str]:
        """Everything verification compares: the stream, every tag that is not ours and the
        raw ID3v1 block some taggers append to any file."""
        info = self.file.info
        stream = repr((type(info).__name__, getattr(info, "sample_rate", None),
                       getattr(info, "channels", None), round(info.length, 3)))
        v1 = repr(("ID3v1", id3.v1_block(self.file.filename)))
        return [stream, v1, *self.module.others(self.file)]

    def save(self) -> None:
        self.module.save(self.file, **self.options)


def open_tagged(path: str, id3_version: int | None = None,
                v23_sep: str = id3.V23_SEP) -> Tagged:
    """Open ``path`` with the module of its container.

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
        if module is id3:
            f, target = id3.load(path, kind, id3_version, v23_sep)
            return Tagged(f, module, {"target": target})
        return Tagged(module.load(path, kind), module, {})


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


def apply(tagged: Tagged, plan: TagPlan) -> TagPlan:
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
    return TagPlan(FieldPlan("genre", plan.genre.old, stored.genres),
                   FieldPlan("mood", plan.mood.old, stored.mood))


def verify(path: str, written: str, plan: TagPlan, others: list[str],
           id3_version: int | None, v23_sep: str) -> None:
    """Re-read ``written``: our fields exactly as planned, everything else as before.

    Parameters
    ----------
    path : str
        The file named in errors.
    written : str
        The file to check (the temporary copy, or ``path`` itself after an in-place write).
    """
    with errors(path, "verification failed: cannot re-read the written file"):
        tagged = open_tagged(written, id3_version, v23_sep)
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
