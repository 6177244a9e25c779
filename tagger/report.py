"""What the front doors say about files: escaped names, a track's result line, failure
reasons, the run summary.

The CLI and the beets plugin (and the watch daemon, where it reports) word a file's result,
its failure and a run's counts the same way; this module is that wording, once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import unicodedata
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # not imported at run time: printable() must stay cheap to import
    from .result import TrackResult
    from .tagging import Outcome

__all__ = ["LineFormatter", "RunCounts", "failure_reason", "format_outcome", "format_result",
           "printable", "skip_reason"]

PathText = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# Escapes shown for the common control characters; any other becomes \xNN / \uNNNN.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: PathText) -> str:
    """``text`` (a file name, a message) as one safe line for a terminal or a log.

    Control characters (line breaks, escape sequences, U+2028 ...) and bytes that are not
    UTF-8 (kept by Python as lone surrogates) are written as backslash escapes, so a file name
    can neither start a new line that looks like another file's result nor fail to print.

    >>> printable("a\\nb\\x1b[2J.mp3")
    'a\\\\nb\\\\x1b[2J.mp3'
    """
    if isinstance(text, (bytes, os.PathLike)):
        text = os.fsdecode(text)
    text = str(text)
    if text.isprintable():
        return text  # the common case, at C speed
    return "".join(_escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if ch == " " or ch.isprintable():
        return ch
    if unicodedata.category(ch) == "Zs":  # other spaces: harmless, keep them readable
        return ch
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def format_result(result: TrackResult, name: PathText | None = None) -> str:
    """One human line: ``path: Genre 0.81, Genre 0.33 | mood 0.72``.

    Parameters
    ----------
    result : TrackResult
        The track's result.
    name : str or path-like, optional
        What the line starts with (escaped); default: the result's path.
    """
    genres = ", ".join(f"{label} {prob:.2f}" for label, prob in result.genres) or "-"
    text = f"{printable(result.path if name is None else name)}: {genres}"
    if result.emotion is not None:
        text += f" | {result.emotion[0]} {result.emotion[1]:.2f}"
    return text


def format_outcome(outcome: Outcome, dry_run: bool = False) -> str:
    """``tag --print``: ``path: Low, High | calm [tagged, analysed] genre: [] -> ['Low']``.

    The values are what the file holds now (or would, in a dry run); the brackets say what
    happened to it and where the result came from; then the fields that changed."""
    plan, result = outcome.plan, outcome.result
    if plan is not None:
        genres, mood = plan.after.genres, plan.after.mood
    else:
        genres, mood = [g for g, _ in result.genres], result.emotion and result.emotion[0]
    status = outcome.status
    if dry_run and status == "tagged":
        status = "would tag"
    text = (f"{printable(outcome.path)}: {', '.join(genres) or '-'} | {mood or '-'} "
            f"[{status}, {outcome.source}]")
    if plan is not None and plan.changed:
        text += " " + "; ".join(f.describe() for f in plan.fields if f.changed)
    return text


class LineFormatter(logging.Formatter):
    """A log formatter that keeps every record's message on its line: a file name with a line
    break or an escape sequence cannot forge another log line (:func:`printable`). A
    traceback, added after the message, keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def skip_reason(err: BaseException) -> str | None:
    """Why a file is skipped rather than failed (``"silent"``), or None for a real failure.

    A silent track has nothing to tag: it is not an error, so it must not make a run (nor
    every later run) exit with status 1.
    """
    from .audio import SilentAudio  # here: printable() must not cost the decoders' import

    return str(err) if isinstance(err, SilentAudio) else None


def failure_reason(err: BaseException) -> str:
    """One line saying why a file could not be analysed or tagged (without its name)."""
    from .audio import AudioError
    from .tags import TagError

    if isinstance(err, TagError):
        reason = err.reason
    elif isinstance(err, OSError) and err.strerror:
        reason = err.strerror
    elif isinstance(err, (AudioError, OSError)):
        reason = str(err)
    else:  # a bug: name it, the traceback is logged at debug level by the caller
        reason = f"{type(err).__name__}: {err}"
    return printable(" ".join(reason.split()) or type(err).__name__)


@dataclasses.dataclass
class RunCounts:
    """Files of one run, each counted once per axis.

    ``tagged``/``unchanged`` say what writing did (absent when nothing is written),
    ``analysed``/``reheaded``/``cached`` where the result came from (``reheaded``: new heads
    on cached embeddings, no decoding; ``cached`` includes files found again after a move),
    ``skipped`` the silent files and ``failed`` the files that went wrong.
    """

    write: bool = True
    tagged: int = 0
    unchanged: int = 0
    analysed: int = 0
    reheaded: int = 0
    cached: int = 0
    skipped: int = 0
    failed: int = 0

    def add(self, changed: bool | None, source: str) -> None:
        """Count one file that went through: ``changed`` is None when tags were not written;
        ``source`` is ``analysed``, ``reheaded``, ``cache`` or ``moved``."""
        if changed is not None:
            if changed:
                self.tagged += 1
            else:
                self.unchanged += 1
        if source == "analysed":
            self.analysed += 1
        elif source == "reheaded":
            self.reheaded += 1
        else:
            self.cached += 1

    def line(self, dry_run: bool = False) -> str:
        """``tagged 3, unchanged 0, analysed 3, cached 0, skipped 0, failed 0`` (with
        ``reheaded N`` after ``analysed`` when there were any)."""
        parts = []
        if self.write:
            parts += [f"{'would tag' if dry_run else 'tagged'} {self.tagged}",
                      f"unchanged {self.unchanged}"]
        parts += [f"analysed {self.analysed}"]
        if self.reheaded:
            parts.append(f"reheaded {self.reheaded}")
        parts += [f"cached {self.cached}",
                  f"skipped {self.skipped}", f"failed {self.failed}"]
        return ", ".join(parts)
