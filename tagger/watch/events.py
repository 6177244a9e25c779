"""From watchdog events under one watched folder to :class:`~tagger.watch.settle.Settler`
touches: which names are tracks at all, and what each kind of event means for settling.

A file is never queued straight from an event: events only (re)start its quiet time. Temporary
names (``.part``, ``.crdownload``, ``.!qB``, a ``~`` suffix, dot-files, genreml's own
``.NAME.genreml-XXXX.tmp``) and non-audio files are ignored; a rename from such a name to
``song.mp3`` is a new, complete file. The handler is given only what it needs (the settler, its
root, a callback for the root's own disappearance), not the daemon.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from ..audio import is_audio_path
from ..tags import is_temp_file
from .settle import Settler

log = logging.getLogger(__name__)

__all__ = ["EventHandler", "TEMP_SUFFIXES", "is_ignored_name"]

# Suffixes of files still being downloaded or written (lower-case): browsers, download
# managers, torrent clients, rsync/office-style temporaries.
TEMP_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".opdownload", ".tmp",
                 ".temp", ".!qb", ".!ut", ".aria2", ".filepart")


def is_ignored_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a file that is not (yet) a finished track: a dot-file (which
    includes genreml's own temporary copies), a ``~`` backup or a download in progress."""
    name = os.path.basename(os.fspath(path))
    lower = name.lower()
    return (name.startswith(".") or name.endswith("~") or is_temp_file(name)
            or lower.endswith(TEMP_SUFFIXES))


def _is_candidate(path: str, root: str) -> bool:
    """An audio file below ``root`` that :func:`find_audio` would list: no hidden part."""
    if not is_audio_path(path) or is_ignored_name(path):
        return False
    rel = os.path.relpath(path, root)
    return not rel.startswith("..") and not any(p.startswith(".") for p in rel.split(os.sep))


_Handler = Callable[["EventHandler", Any], None]


def _guarded(method: _Handler) -> _Handler:
    """Log what an event handler raises: an event must never kill the observer thread."""

    @functools.wraps(method)
    def wrapper(self: EventHandler, event: FileSystemEvent) -> None:
        try:
            method(self, event)
        except Exception:
            log.exception("cannot handle %r", event)

    return wrapper


class EventHandler(FileSystemEventHandler):
    """Turns watchdog events under one root into :class:`Settler` touches.

    Parameters
    ----------
    root : str
        The watched folder as the user gave it (paths are reported below it).
    watched : str
        What the observer watches: the root's real path if the root is a link.
    settler : Settler
        Where changed files wait until they are due.
    close_events : bool
        The observer reports closes (inotify): a write then means "wait for the close".
    on_root_gone : callable
        Called when the watched folder itself is deleted or moved away.
    settle : float, optional
        Quiet seconds below this root (None: the settler's).
    """

    def __init__(self, root: str, watched: str, settler: Settler, close_events: bool,
                 on_root_gone: Callable[[], None], settle: float | None = None) -> None:
        self.root = root
        self.watched = watched  # what the observer watches: the root's real path if a link
        self.settler = settler
        self.settle = settle  # quiet seconds below this root (None: the settler's)
        self.close_events = close_events
        self.on_root_gone = on_root_gone

    def _translate(self, raw: str | bytes) -> str:
        """An event path as below the root we were given (not the symlink's target)."""
        path = os.fsdecode(raw)
        if self.watched != self.root and (path == self.watched
                                          or path.startswith(self.watched + os.sep)):
            path = self.root + path[len(self.watched):]
        return path

    def _path(self, raw: str | bytes) -> str | None:
        """The event's file if it is one we tag, else None."""
        path = self._translate(raw)
        return path if _is_candidate(path, self.root) else None

    def _gone(self, event: DirDeletedEvent | DirMovedEvent | FileDeletedEvent | FileMovedEvent
              ) -> None:
        """The event's source is gone (deleted or moved away): forget what waited there."""
        if not event.is_directory:
            src = self._path(event.src_path)
            if src is not None:
                self.settler.forget(src)
            return
        if os.fsdecode(event.src_path) == self.watched:
            self.on_root_gone()  # watchdog stops watching it; a new folder needs a new watch
        # The files of a folder moved within the tree come as their own move events.
        self.settler.forget_under(self._translate(event.src_path))

    @_guarded
    def on_deleted(self, event: DirDeletedEvent | FileDeletedEvent) -> None:
        self._gone(event)

    @_guarded
    def on_moved(self, event: DirMovedEvent | FileMovedEvent) -> None:
        self._gone(event)
        if event.is_directory or not event.dest_path:
            return
        dest = self._path(event.dest_path)
        if dest is not None:  # renamed into place: complete (song.mp3.part -> song.mp3)
            self.settler.touch(dest, writing=False, settle=self.settle)

    @_guarded
    def on_closed(self, event: FileClosedEvent) -> None:
        src = None if event.is_directory else self._path(event.src_path)
        if src is not None:
            self.settler.touch(src, writing=False, settle=self.settle)

    @_guarded
    def on_modified(self, event: DirModifiedEvent | FileModifiedEvent) -> None:
        src = None if event.is_directory else self._path(event.src_path)
        if src is not None:
            self.settler.touch(src, writing=True if self.close_events else None,
                               settle=self.settle)

    @_guarded
    def on_created(self, event: DirCreatedEvent | FileCreatedEvent) -> None:
        src = None if event.is_directory else self._path(event.src_path)
        if src is not None:
            # a hard link or a move from outside never writes
            self.settler.touch(src, settle=self.settle)
