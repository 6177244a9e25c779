"""Write predicted genres and mood into audio files' own tags, safely.

Fields, per container (the names Picard, beets and Navidrome use):

============================  ===================================  ================================
container                     genres (several)                     mood (one)
============================  ===================================  ================================
ID3v2.4 (mp3, WAV, AIFF)      ``TCON``, one value each             ``TMOO``
ID3v2.3                       ``TCON``, joined with ``"/"``        ``TXXX:MOOD``
Vorbis (FLAC, Ogg, Opus)      ``GENRE``, one field each            ``MOOD``
MP4 (m4a)                     ``©gen``                             ``----:com.apple.iTunes:MOOD``
============================  ===================================  ================================

A file keeps its ID3 version unless ``id3_version`` says otherwise (:func:`write_tags`).

What to write is decided per field by a :class:`Policy`: ``fill`` (the default) writes only
where the file has no value, so curated tags are never replaced; ``merge`` appends new
genres after the existing ones; ``force`` replaces. An empty prediction (no genres, no mood)
never touches its field.

Writes are atomic: the file is copied to a hidden temporary file in the same folder, the copy
is tagged, synced and verified (our fields as planned, every other tag and the stream info
unchanged), given the original's permission bits and owner, and renamed over the original.
Whatever fails, the original is left as it was and :class:`TagError` says why. A process
killed mid-write can leave a temporary file named like :data:`TEMP_GLOB`
(``.NAME.genreml-XXXXXXXX.tmp``) but never a half-written original; :func:`is_temp_file`
lets a folder watcher ignore those and :func:`cleanup_stale_temp` removes old ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import mutagen
from mutagen import FileType

from . import id3, mp4, vorbis

__all__ = [
    "MODES",
    "TEMP_GLOB",
    "FieldPlan",
    "FileTags",
    "Policy",
    "TagError",
    "TagPlan",
    "cleanup_stale_temp",
    "is_temp_file",
    "plan_tags",
    "read_tags",
    "write_tags",
]

log = logging.getLogger(__name__)

MODES = ("fill", "merge", "force")
TEMP_GLOB = ".*.genreml-*.tmp"
_TEMP_INFIX = ".genreml-"
_TEMP_SUFFIX = ".tmp"
_NAME_BYTES = 180  # room for the infix and random part within a 255-byte file name
_COPY_CHUNK = 1 << 20
_TEMP_ERRORS = {errno.EACCES: "read-only folder", errno.EPERM: "read-only folder",
                errno.EROFS: "read-only file system"}

_MODULES = {kind: module for module in (id3, vorbis, mp4) for kind in module.KINDS}

T = TypeVar("T")


class TagError(Exception):
    """Reading or writing a file's tags failed; the file is unchanged.

    Parameters
    ----------
    path : str
        The file.
    reason : str
        One line saying what went wrong.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = " ".join(reason.split())  # one line, whatever the cause's text
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple[type[TagError], tuple[str, str]]:
        return type(self), (self.path, self.reason)  # picklable across worker processes


@dataclasses.dataclass
class FileTags:
    """The genres and the mood a file holds (or will hold)."""

    genres: list[str] = dataclasses.field(default_factory=list)
    mood: str | None = None


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a prediction meets a value already in the file, per field.

    Parameters
    ----------
    genre, mood : {"fill", "merge", "force"}
        ``fill``: write only if the file has no value. ``merge``: keep the existing genres
        and append the predicted ones not among them (case-insensitively); a file holds one
        mood, so for the mood ``merge`` keeps an existing one like ``fill``. ``force``:
        replace.
    """

    genre: str = "fill"
    mood: str = "fill"

    def __post_init__(self) -> None:
        for name in ("genre", "mood"):
            if getattr(self, name) not in MODES:
                raise ValueError(
                    f"{name} policy must be one of {MODES}, not {getattr(self, name)!r}")

    @classmethod
    def of(cls, policy: str | Policy) -> Policy:
        """A :class:`Policy` from itself or from one mode name for both fields."""
        return policy if isinstance(policy, Policy) else cls(genre=policy, mood=policy)


@dataclasses.dataclass(frozen=True)
class FieldPlan(Generic[T]):
    """One field's value before and after a write."""

    name: str
    old: T
    new: T

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def describe(self) -> str:
        if self.changed:
            return f"{self.name}: {self.old!r} -> {self.new!r}"
        return f"{self.name}: {self.old!r} (unchanged)"


@dataclasses.dataclass(frozen=True)
class TagPlan:
    """What :func:`write_tags` does (or, in a dry run, would do) to a file."""

    genre: FieldPlan[list[str]]
    mood: FieldPlan[str | None]

    @property
    def fields(self) -> tuple[FieldPlan[Any], ...]:
        return (self.genre, self.mood)

    @property
    def changed(self) -> bool:
        """Whether the file needs writing at all."""
        return any(f.changed for f in self.fields)

    @property
    def before(self) -> FileTags:
        return FileTags(list(self.genre.old), self.mood.old)

    @property
    def after(self) -> FileTags:
        return FileTags(list(self.genre.new), self.mood.new)

    def describe(self) -> list[str]:
        """Human lines, one per field, e.g. ``"genre: ['Rock'] -> ['Rock', 'Jazz']"``."""
        return [f.describe() for f in self.fields]


# --- policy: pure functions ------------------------------------------------------------------


def plan_tags(
    current: FileTags,
    genres: Iterable[str] | None,
    mood: str | None,
    policy: str | Policy = "fill",
) -> TagPlan:
    """Decide the new genres and mood from what the file has and what was predicted.

    Parameters
    ----------
    current : FileTags
        What the file holds now (:func:`read_tags`).
    genres : list of str
        Predicted genres, most probable first. Values are stripped; empty ones and
        case-insensitive repeats are dropped. An empty list leaves the field alone.
    mood : str or None
        Predicted mood; ``None`` (or blank) leaves the field alone.
    policy : str or Policy
        ``"fill"``, ``"merge"`` or ``"force"`` for both fields, or a :class:`Policy`.

    Returns
    -------
    TagPlan
    """
    if isinstance(genres, str):
        raise TypeError("genres must be a list of strings, not a string")
    policy = Policy.of(policy)
    predicted = _clean(genres or [])
    new_mood = next(iter(_clean([mood] if mood is not None else [])), None)
    return TagPlan(
        FieldPlan("genre", list(current.genres),
                  _plan_genres(current.genres, predicted, policy.genre)),
        FieldPlan("mood", current.mood, _plan_mood(current.mood, new_mood, policy.mood)),
    )


def _clean(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        value = value.strip()
        if value and value.casefold() not in seen:
            seen.add(value.casefold())
            out.append(value)
    return out


def _plan_genres(old: list[str], predicted: list[str], mode: str) -> list[str]:
    if not predicted or (old and mode == "fill"):
        return list(old)
    if mode == "merge":
        have = {g.casefold() for g in old}
        return list(old) + [g for g in predicted if g.casefold() not in have]
    return predicted


def _plan_mood(old: str | None, predicted: str | None, mode: str) -> str | None:
    if predicted is None or (old is not None and mode != "force"):
        return old
    return predicted


# --- containers ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tagged:
    """An open file bound to its container module (and, for ID3, the version to write)."""

    file: FileType
    module: Any
    options: dict[str, Any]

    def read(self) -> FileTags:
        return FileTags(*self.module.read(self.file, **self.options))

    def set_genres(self, genres: list[str]) -> None:
        self.module.set_genres(self.file, genres, **self.options)

    def set_mood(self, mood: str) -> None:
        self.module.set_mood(self.file, mood, **self.options)

    def others(self) -> list[str]:
        info = self.file.info
        stream = repr((type(info).__name__, getattr(info, "sample_rate", None),
                       getattr(info, "channels", None), round(info.length, 3)))
        return [stream, *self.module.others(self.file)]

    def save(self) -> None:
        self.module.save(self.file, **self.options)


@contextlib.contextmanager
def _errors(path: str, doing: str) -> Iterator[None]:
    """Turn whatever a step raises into a :class:`TagError` naming ``path``."""
    try:
        yield
    except TagError:
        raise
    except OSError as e:
        raise TagError(path, f"{doing}: {e.strerror or e}") from e
    except mutagen.MutagenError as e:
        cause = e.args[0] if e.args else None
        if isinstance(cause, OSError):  # mutagen wraps I/O errors: not the file's fault
            raise TagError(path, f"{doing}: {cause.strerror or cause}") from e
        raise TagError(path, f"corrupt file ({doing}: {e})") from e
    except Exception as e:  # mutagen's parsers can trip over junk in many ways
        raise TagError(path, f"corrupt file ({doing}: {type(e).__name__}: {e})") from e


def _open(path: str, id3_version: int | None = None) -> _Tagged:
    with _errors(path, "cannot read tags"):
        detected = mutagen.File(path)
        if detected is None:
            raise TagError(path, "unsupported format (not a recognised audio file)")
        kind = type(detected)
        module = _MODULES.get(kind)
        if module is None:
            raise TagError(path, f"unsupported format ({kind.__name__})")
        if module is id3:
            f, version = id3.load(path, kind, id3_version)
            return _Tagged(f, module, {"version": version})
        return _Tagged(module.load(path, kind), module, {})


def _stat(path: str) -> os.stat_result:
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


def read_tags(path: str | os.PathLike[str]) -> FileTags:
    """The genres and mood in a file now.

    Raises
    ------
    TagError
        Missing, empty, unsupported or corrupt file.
    """
    real = os.path.realpath(path)
    _stat(real)
    return _open(real).read()


# --- writing ---------------------------------------------------------------------------------


def write_tags(
    path: str | os.PathLike[str],
    genres: Iterable[str] | None,
    mood: str | None,
    policy: str | Policy = "fill",
    dry_run: bool = False,
    *,
    id3_version: int | None = None,
) -> TagPlan:
    """Plan and (unless ``dry_run``) atomically write genres and mood into a file.

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

    Returns
    -------
    TagPlan
        What was (or would be) written. Values are as the container stores them: in an
        ID3v2.3 tag a predicted ``"Hip-Hop/Rap"`` becomes two genres.

    Raises
    ------
    TagError
        Missing, empty, unsupported, corrupt, read-only file or folder, the file changed
        during the write, or the written copy did not verify. The original is unchanged.
    """
    if id3_version not in (None, 3, 4):
        raise ValueError(f"id3_version must be None, 3 or 4, not {id3_version!r}")
    real = os.path.realpath(path)
    before = _stat(real)
    tagged = _open(real, id3_version)
    plan = plan_tags(tagged.read(), genres, mood, policy)
    others = tagged.others() if plan.changed else []
    if plan.changed:
        plan = _apply(tagged, plan)  # in memory only: what this container will store
    if not plan.changed or dry_run:
        log.debug("%s%s: %s", real, " (dry run)" if dry_run else "", "; ".join(plan.describe()))
        return plan
    _check_writable(real, before)
    if before.st_nlink > 1:
        log.warning("%s has %d hard links: the others keep the old tags", real, before.st_nlink)
    _replace_atomically(real, before, plan, others, id3_version)
    log.info("tagged %s: %s", real, "; ".join(f.describe() for f in plan.fields if f.changed))
    return plan


def _apply(tagged: _Tagged, plan: TagPlan) -> TagPlan:
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


def _replace_atomically(path: str, before: os.stat_result, plan: TagPlan, others: list[str],
                        id3_version: int | None) -> None:
    tmp = _temp_copy(path)
    try:
        with _errors(path, "cannot write tags"):
            tagged = _open(tmp, id3_version)
            _apply(tagged, plan)
            tagged.save()
            _fsync(tmp)
        _verify(path, tmp, plan, others, id3_version)
        with _errors(path, "cannot replace the file"):
            _copy_owner_and_mode(tmp, before)
            _check_unchanged(path, before)
            os.replace(tmp, path)
    except TagError as e:
        _remove(tmp)
        raise TagError(path, e.reason) from e  # name the original, not the temporary copy
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path))


def _temp_copy(path: str) -> str:
    """Copy ``path`` to a new hidden file next to it (same filesystem: the rename is atomic)."""
    folder, name = os.path.split(path)
    short = os.fsencode(name)[:_NAME_BYTES].decode("utf-8", "ignore")  # a hint, not a key
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{short}{_TEMP_INFIX}", suffix=_TEMP_SUFFIX,
                                   dir=folder)
    except OSError as e:
        reason = _TEMP_ERRORS.get(e.errno, "cannot create a temporary copy")
        raise TagError(path, f"{reason}: {e.strerror}") from e
    try:
        with _errors(path, "cannot copy the file"), os.fdopen(fd, "wb") as dst, \
                open(path, "rb") as src:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _verify(path: str, tmp: str, plan: TagPlan, others: list[str], id3_version: int | None) -> None:
    """Re-read the written copy: our fields exactly as planned, everything else as before."""
    with _errors(path, "verification failed: cannot re-read the written copy"):
        tagged = _open(tmp, id3_version)
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


def _copy_owner_and_mode(tmp: str, st: os.stat_result) -> None:
    try:
        os.chown(tmp, st.st_uid, st.st_gid)  # before chmod: chown may clear set-id bits
    except PermissionError:
        log.debug("%s: cannot keep owner %d:%d (not root)", tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))


def _check_unchanged(path: str, before: os.stat_result) -> None:
    """Refuse to replace a file another program changed while we were tagging the copy."""
    now = os.stat(path)
    identity = (now.st_ino, now.st_size, now.st_mtime_ns)
    if identity != (before.st_ino, before.st_size, before.st_mtime_ns):
        raise TagError(path, "file changed while tagging; not replaced")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not every filesystem lets a directory be synced.
    try:
        _fsync(folder)
    except OSError as e:
        log.debug("%s: cannot sync folder: %s", folder, e)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --- temporary files -------------------------------------------------------------------------


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like one of our temporary copies (see :data:`TEMP_GLOB`)."""
    return fnmatch.fnmatchcase(os.path.basename(path), TEMP_GLOB)


def cleanup_stale_temp(folder: str | os.PathLike[str], min_age: float = 3600.0) -> list[Path]:
    """Remove temporary copies a killed writer left in ``folder`` (not recursive).

    Parameters
    ----------
    folder : path-like
        The folder to clean.
    min_age : float
        Seconds since the file was last modified; younger ones may belong to a write in
        progress and are kept.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed: list[Path] = []
    now = time.time()
    for candidate in Path(folder).glob(TEMP_GLOB):
        with contextlib.suppress(FileNotFoundError):
            st = candidate.lstat()
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= min_age:
                candidate.unlink()
                removed.append(candidate)
                log.info("removed stale temporary file %s", candidate)
    return removed
