"""A cache file that cannot be used gets one clear line, never a traceback; read-only use;
a cache deleted or replaced under a running process. Real SQLite files, real permissions."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

from test_cache import MODELS, stored
from tagger.cache import Cache, CacheError

NOBODY = 65534


def _one_line(err: BaseException, db: Path) -> str:
    text = str(err)
    assert "\n" not in text and str(db) in text, text
    return text


def _filled(tmp_path: Path, name: str = "cache.db") -> Path:
    db = tmp_path / name
    with Cache(db) as c:
        for i in range(40):
            stored(tmp_path, c, f"track{i}.flac", seed=i, n_clips=50)
    return db


# --------------------------------------------------------------------------- bad files


def test_garbage_file_is_not_a_genreml_cache(tmp_path):
    db = tmp_path / "cache.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    before = db.read_bytes()
    with pytest.raises(CacheError) as caught:
        Cache(db)
    text = _one_line(caught.value, db)
    assert "is not a genreml cache" in text and "--cache" in text
    assert db.read_bytes() == before


def test_truncated_cache_is_damaged(tmp_path):
    db = _filled(tmp_path)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    with pytest.raises(CacheError) as caught:
        with Cache(db) as c:  # if opening passes, the first query must say it
            c.summary()
            c.query("emotion", "calm")
    text = _one_line(caught.value, db)
    assert "damaged" in text or "not a genreml cache" in text


def test_another_programs_database_is_left_alone(tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    with pytest.raises(CacheError, match="is not a genreml cache"):
        Cache(db)
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["contacts"]


def test_unopenable_paths(tmp_path):
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(CacheError) as caught:
        Cache(folder)
    _one_line(caught.value, folder)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError) as caught:  # its folder cannot be created
        Cache(blocker / "cache.db")
    _one_line(caught.value, blocker / "cache.db")
    missing = tmp_path / "nowhere" / "cache.db"
    with pytest.raises(CacheError) as caught:
        Cache(missing, readonly=True)
    _one_line(caught.value, missing)
    assert not missing.parent.exists()  # read-only creates nothing


# --------------------------------------------------------------------------- permissions


def _as_other_user(fn, *args):
    """Run ``fn(*args)`` where file permissions apply: in a forked child as nobody when we
    are root (root ignores them), else right here. Returns what it returns, or the
    ``(type name, message)`` of what it raised."""
    def call():
        try:
            return fn(*args)
        except Exception as err:  # reported to the parent
            return (type(err).__name__, str(err))

    if os.geteuid() != 0:
        return call()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        queue.put(call())

    proc = ctx.Process(target=child)
    proc.start()
    out = queue.get(timeout=120)
    proc.join(30)
    return out


@pytest.fixture
def shared_dir():
    """A folder that another user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="genreml-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _open_and_query(db: Path, readonly: bool):
    with Cache(db, readonly=readonly) as c:
        return c.summary()


def _write(db: Path, name: str):
    with Cache(db) as c:
        c.enqueue(name)
    return "written"


def test_read_only_file_fails_clearly_but_reads(shared_dir):
    db = _filled(shared_dir)
    for p in shared_dir.iterdir():
        p.chmod(0o444)
    before = db.read_bytes()
    got = _as_other_user(_write, db, "x.flac")
    assert got[0] == "CacheError" and "\n" not in got[1] and str(db) in got[1], got
    assert "cannot be written" in got[1] or "cannot be opened" in got[1]
    got = _as_other_user(_open_and_query, db, True)
    assert got == {"tracks": 40, "tagged": 0, "stale": 0, "failed": 0}
    assert db.read_bytes() == before


def test_read_only_folder_with_a_wal_database(shared_dir):
    db = _filled(shared_dir)
    # a writer that is still open leaves a -wal file with the last commits in it
    keeper = sqlite3.connect(db)
    keeper.execute("PRAGMA wal_autocheckpoint = 0")
    keeper.execute("CREATE TABLE IF NOT EXISTS jobs_dummy (x)")
    keeper.execute("DROP TABLE jobs_dummy")
    keeper.commit()
    for p in shared_dir.iterdir():
        p.chmod(0o444)
    shared_dir.chmod(0o555)
    try:
        got = _as_other_user(_open_and_query, db, True)
        assert got == {"tracks": 40, "tagged": 0, "stale": 0, "failed": 0}, got
    finally:
        shared_dir.chmod(0o755)
        keeper.close()


def test_read_only_cache_refuses_writes(tmp_path):
    db = _filled(tmp_path)
    before = db.read_bytes()
    with Cache(db, readonly=True) as c:
        assert c.summary()["tracks"] == 40
        with pytest.raises(CacheError, match="read-only"):
            c.enqueue(tmp_path / "x.flac")
    assert db.read_bytes() == before


# --------------------------------------------------------------------------- under a daemon


def test_deleted_cache_is_recreated(tmp_path, caplog):
    db = _filled(tmp_path)
    with Cache(db) as c:
        assert not c.recreate_if_missing()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        with caplog.at_level(logging.WARNING, logger="tagger.cache"):
            assert c.recreate_if_missing()
        assert any("deleted" in r.getMessage() for r in caplog.records)
        path, _ = stored(tmp_path, c, "new.flac")
        assert c.lookup(path, MODELS) is not None
        assert not c.recreate_if_missing()
    with sqlite3.connect(db) as conn:  # the results went into the file at the path
        assert conn.execute("SELECT count(*) FROM tracks").fetchone() == (1,)


def test_replaced_cache_is_reopened(tmp_path):
    db = _filled(tmp_path)
    other = _filled(tmp_path / "elsewhere")
    with Cache(db) as c:
        assert c.summary()["tracks"] == 40
        os.replace(other, db)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        assert c.recreate_if_missing()
        c.enqueue(tmp_path / "x.flac")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
