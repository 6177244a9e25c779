"""The cache's database file: how it is opened (read-write, or read-only), what a failure to
use it means to the user, and whether the file on disk is still the one we opened.

Every SQLite or SQLAlchemy error about the file itself becomes a :class:`CacheError`: one
line naming the file, what is wrong and what to do, for the front doors to print.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import exc

log = logging.getLogger(__name__)

__all__ = ["CacheError", "FileIdentity", "connector", "file_identity", "translate_errors"]

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
