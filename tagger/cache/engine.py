"""The cache's SQLite file: where it lives, how it is opened, and what a failure to use it
means to the user.

The CLI, the beets plugin and the watch daemon may all open the same database at once, so every
connection runs in WAL mode (readers never block the writer) with a generous ``busy_timeout``,
and every write transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front, so
a writer waits in SQLite's busy handler instead of failing with "database is locked" when it
upgrades a read lock half-way through a transaction. A pooled connection inherited through
``fork()`` is never used by the child.

A read-only opening never writes the file, and :func:`file_identity` tells whether the file on
disk is still the one we opened. Every SQLite or SQLAlchemy error about the file itself becomes a
:class:`CacheError`: one line naming the file, what is wrong and what to do, for the front doors
to print. :func:`default_cache_path` is the one place that computes where the cache lives.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc, pool

log = logging.getLogger(__name__)

__all__ = ["BUSY_TIMEOUT_MS", "CacheError", "FileIdentity", "connector", "default_cache_path",
           "file_identity", "translate_errors"]

BUSY_TIMEOUT_MS = 30_000
# Execution option that makes the "begin" listener emit BEGIN IMMEDIATE.
_IMMEDIATE = "genreml_begin_immediate"

FileIdentity = tuple[int, int]  # (st_dev, st_ino)


class CacheError(RuntimeError):
    """The cache file cannot be used; the message is one line naming it and what to do."""


def _advice(path: Path, reason: str) -> str:
    """The one line for an SQLite error ``reason`` about the cache at ``path``."""
    low = reason.lower()
    if "not a database" in low:
        return f"cache {path} is not a genreml cache ({reason}): move it away or pass --cache"
    if "malformed" in low or "corrupt" in low:
        return (f"cache {path} is damaged ({reason}): move it away (a new one is made) "
                f"or pass --cache")
    if "readonly" in low or "read-only" in low or "permission" in low:
        return (f"cache {path} cannot be written ({reason}): fix its permissions or those "
                f"of its folder, or pass --cache")
    if "unable to open" in low:
        return (f"cache {path} cannot be opened ({reason}): check that its folder exists and "
                f"is readable, or pass --cache")
    if "locked" in low or "busy" in low:
        return f"cache {path} is busy ({reason}): another genreml holds it; try again"
    if "no such" in low:  # a table or column: another program's database, or a half schema
        return f"cache {path} is not a genreml cache ({reason}): move it away or pass --cache"
    return f"cache {path} cannot be used ({reason}): move it away or pass --cache"


def _reason(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


@contextlib.contextmanager
def translate_errors(path: Path, error: type[Exception] = CacheError) -> Iterator[None]:
    """Turn SQLite errors about the file (not programming errors) into ``error``."""
    try:
        yield
    except (exc.OperationalError, exc.DatabaseError, sqlite3.OperationalError,
            sqlite3.DatabaseError) as err:
        if isinstance(err, (exc.IntegrityError, sqlite3.IntegrityError)):
            raise  # a constraint: our bug, not the user's file
        raise error(_advice(path, _reason(err))) from err
    except OSError as err:  # creating its folder, or reading the file
        reason = err.strerror or str(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            raise error(f"cache {path} cannot be created ({reason}: a file is in the way of "
                        f"its folder): pass --cache") from err
        raise error(_advice(path, reason)) from err


def _uri(path: Path, **params: str) -> str:
    query = urllib.parse.urlencode(params)
    return f"file:{urllib.parse.quote(os.fsencode(path))}?{query}"


def connector(path: Path, readonly: bool) -> Callable[[], sqlite3.Connection]:
    """A connection factory for ``create_engine(creator=...)``.

    Read-only opens with ``mode=ro``: nothing is ever written. A WAL database in a folder we
    cannot write cannot be opened that way (SQLite needs its ``-shm`` file), so then it is
    opened ``immutable=1``: SQLite reads the file as it is, without locks, and a change made
    meanwhile by another process may be missed (fine for ``status`` or ``playlist``).
    """
    mode: list[str] = []

    def connect() -> sqlite3.Connection:
        if not readonly:
            return sqlite3.connect(os.fsencode(path), check_same_thread=False)
        if not mode:
            mode.append(_pick_readonly_mode(path))
        params = {"immutable": "1"} if mode[0] == "immutable" else {"mode": "ro"}
        return sqlite3.connect(_uri(path, **params), uri=True, check_same_thread=False)

    return connect


def _pick_readonly_mode(path: Path) -> str:
    if not path.exists():  # mode=ro would only say "unable to open database file"
        raise sqlite3.OperationalError("no such file")
    conn = sqlite3.connect(_uri(path, mode="ro"), uri=True)
    try:
        conn.execute("PRAGMA user_version").fetchone()
        return "ro"
    except sqlite3.OperationalError:
        log.info("opening %s immutable (its folder cannot be written)", path)
        return "immutable"
    finally:
        conn.close()


def file_identity(path: Path) -> FileIdentity | None:
    """``(st_dev, st_ino)`` of the file at ``path``, None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def default_cache_path() -> Path:
    """``$XDG_DATA_HOME/genreml/cache.db``, else ``~/.local/share/genreml/cache.db``
    (:func:`tagger.xdg.data_home`)."""
    from ..xdg import data_home

    return data_home() / "cache.db"


def _on_connect(dbapi_conn: Any, record: Any, readonly: bool = False) -> None:
    # SQLAlchemy emits BEGIN itself (_on_begin); the sqlite3 module's own transaction
    # handling would otherwise skip BEGIN for SELECTs and could not do BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    record.info["pid"] = os.getpid()
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first: the rest may wait
        cursor.execute("PRAGMA foreign_keys = ON")
        if readonly:  # setting the journal mode would write the file
            return
        cursor.execute("PRAGMA journal_mode = WAL")
        # Safe in WAL mode (no corruption, at worst the last commits lost on power failure)
        # and commits no longer fsync: storing 10,000 results stays fast.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    # A pooled connection inherited through fork() must not be used by the child.
    if record.info.get("pid") != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None
        raise exc.DisconnectionError("connection belongs to another process")


def _on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    # Straight to the driver: a full SQLAlchemy execute here is ~10% of a per-file lookup.
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _make_engine(path: Path, readonly: bool = False) -> Engine:
    # The pool hands a connection to one thread at a time (check_same_thread=False).
    engine = create_engine("sqlite://", creator=connector(path, readonly),
                           poolclass=pool.QueuePool)
    event.listen(engine, "connect", functools.partial(_on_connect, readonly=readonly))
    event.listen(engine, "checkout", _on_checkout)
    event.listen(engine, "begin", _on_begin)
    return engine
