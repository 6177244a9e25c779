"""The open cache file: its engines for reading and writing, the schema checked or upgraded on
open, the transactions every part of the cache runs in, and a fresh file when the one opened was
deleted or replaced under us.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, exc
from sqlalchemy.orm import Session, sessionmaker

from .engine import (
    _IMMEDIATE,
    CacheError,
    FileIdentity,
    _make_engine,
    default_cache_path,
    file_identity,
    translate_errors,
)
from .schema import _check_version, _ensure_schema

logger = logging.getLogger(__name__)

_D = TypeVar("_D", bound="Database")

# Processes racing to create one new file: SQLite may refuse the switch to WAL (it needs the
# file to itself) with "database is locked" without waiting in the busy handler. Opening is
# tried again, a little later each time (0.05 s ... 1.6 s, about 3 s in all).
OPEN_TRIES = 7


def _busy(err: CacheError) -> bool:
    """Whether ``err`` is SQLite saying "locked" or "busy" (worth another try)."""
    cause = err.__cause__
    return (isinstance(cause, (exc.OperationalError, sqlite3.OperationalError))
            and any(word in str(cause).lower() for word in ("locked", "busy")))


class Database:
    """The file and its transactions: the base of :class:`~tagger.cache.Cache`, which
    documents the parameters."""

    def __init__(self, path: str | os.PathLike[str] | None = None, readonly: bool = False
                 ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.readonly = readonly
        if not readonly:
            with translate_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        for attempt in range(OPEN_TRIES):
            try:
                return self._open_once()
            except CacheError as err:
                if attempt == OPEN_TRIES - 1 or not _busy(err):
                    raise
                logger.debug("%s busy on open (%s); trying again", self.path, err.__cause__)
                time.sleep(0.05 * 2 ** attempt)

    def _open_once(self) -> None:
        self._engine = _make_engine(self.path, self.readonly)
        self._write_engine = self._engine.execution_options(**{_IMMEDIATE: True})
        self._reader = sessionmaker(self._engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        try:
            with self._connect(write=not self.readonly) as conn:
                if self.readonly:
                    _check_version(conn, self.path, readonly=True)
                else:
                    _ensure_schema(conn, self.path)
        except BaseException:
            self._engine.dispose()
            raise
        self._identity: FileIdentity | None = file_identity(self.path)

    def recreate_if_missing(self) -> bool:
        """Start a fresh cache when the file was deleted or replaced under us.

        SQLite keeps writing into the file it opened, even once unlinked: results would go
        nowhere. Compares the open file's ``(st_dev, st_ino)`` with the path's.

        Returns
        -------
        bool
            True when a new cache was created at :attr:`path` (a warning is logged).
        """
        now = file_identity(self.path)
        if now is not None and now == self._identity:
            return False
        logger.warning("cache %s was %s: starting a new one", self.path,
                       "deleted" if now is None else "replaced by another file")
        self._engine.dispose()
        if not self.readonly:
            with translate_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        return True

    # -- lifecycle

    def close(self) -> None:
        """Close every pooled connection (the object must not be used afterwards)."""
        self._engine.dispose()

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[Connection]:
        """A transaction for SQL statements: ``BEGIN IMMEDIATE`` when ``write``, committed on
        success. (Statements run on a Connection skip the ORM's per-call overhead.)"""
        self._check_writable(write)
        with translate_errors(self.path), \
                (self._write_engine if write else self._engine).begin() as conn:
            yield conn

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """A transaction as :meth:`_connect`, for work on ORM objects."""
        self._check_writable(write)
        with translate_errors(self.path), \
                (self._writer if write else self._reader).begin() as session:
            yield session

    def _check_writable(self, write: bool) -> None:
        if write and self.readonly:
            raise CacheError(f"cache {self.path} was opened read-only: this command cannot "
                             f"change it")

