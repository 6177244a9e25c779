"""The SQLite results cache: real database files in tmp_path, real processes, no mocks."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from tagger.cache import Cache, CacheVersionError, Hit, default_cache_path
from tagger.cache import results as cache_results
from tagger.cache import schema as cache_schema
from tagger.result import HeadResult, ModelIdentity, TrackResult

GENRE = ModelIdentity("genre-net", "1.0", "a" * 64)
EMOTION = ModelIdentity("emotion-net", "1.0", "b" * 64)
MODELS = {"genre": GENRE, "emotion": EMOTION}
GENRE_LABELS = ["rock", "jazz", "pop", "techno"]
EMOTION_LABELS = ["calm", "happy", "sad"]
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
FLOAT16_ATOL = float(np.finfo(np.float16).eps) / 2  # rounding error of a value in [0, 1)


def fp(name: str, duration: float = 16.5) -> str:
    """A fingerprint in the current format recording ``duration`` (make_result's default)."""
    return f"v2:1000:1:{round(duration * 1000)}:{name}"


FP_A = fp("a")


# --------------------------------------------------------------------------- helpers


def make_head(task: str, model: ModelIdentity, labels: list[str], rng: np.random.Generator,
              n_clips: int, threshold: float | None, probs: list[float] | None) -> HeadResult:
    """Random clip probabilities, or ``probs`` in every clip (so their mean is ``probs``)."""
    timeline = rng.random((n_clips, len(labels)), dtype=np.float32)
    if probs is not None:
        timeline[:] = np.asarray(probs, dtype=np.float32)
    return HeadResult(task, list(labels), timeline.mean(axis=0), timeline, threshold, model)


def make_result(path: Path | str, seed: int = 0, n_clips: int = 5,
                genre: ModelIdentity | None = GENRE, emotion: ModelIdentity | None = EMOTION,
                genre_probs: list[float] | None = None, emotion_probs: list[float] | None = None,
                genre_threshold: float | None = 0.25) -> TrackResult:
    rng = np.random.default_rng(seed)
    heads = {}
    if genre is not None:
        heads["genre"] = make_head("genre", genre, GENRE_LABELS, rng, n_clips, genre_threshold,
                                   genre_probs)
    if emotion is not None:
        heads["emotion"] = make_head("emotion", emotion, EMOTION_LABELS, rng, n_clips, None,
                                     emotion_probs)
    return TrackResult(str(path), duration=3.0 * n_clips + 1.5,
                       clip_starts=np.arange(n_clips, dtype=np.float32) * 3.0, heads=heads)


def audio_file(directory: Path, name: str, size: int = 100) -> Path:
    """A dummy file: the cache stats files but never reads audio."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def stored(tmp_path: Path, cache: Cache, name: str, fingerprint: str | None = None,
           **kwargs) -> tuple[Path, TrackResult]:
    path = audio_file(tmp_path, name)
    result = make_result(path, **kwargs)
    cache.store(result, fingerprint or fp(name))
    return path, result


def assert_same(got: TrackResult | None, want: TrackResult) -> None:
    assert got is not None
    assert got.duration == want.duration
    np.testing.assert_array_equal(got.clip_starts, want.clip_starts)
    assert set(got.heads) == set(want.heads)
    for task, head in want.heads.items():
        back = got.heads[task]
        assert back.task == task
        assert back.labels == head.labels
        assert back.model == head.model
        assert back.threshold == head.threshold
        np.testing.assert_array_equal(back.probs, head.probs)
        assert back.timeline.dtype == np.float32
        assert back.timeline.shape == head.timeline.shape
        np.testing.assert_allclose(back.timeline, head.timeline, rtol=0, atol=FLOAT16_ATOL)


def sql(db: Path, statement: str) -> list[tuple]:
    """Look at the file with the plain sqlite3 module, as another program would."""
    with sqlite3.connect(db) as conn:
        return conn.execute(statement).fetchall()


@pytest.fixture
def cache(tmp_path: Path):
    with Cache(tmp_path / "cache.db") as c:
        yield c


# --------------------------------------------------------------------------- location, setup


def test_default_path_honours_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "genreml" / "cache.db"
    assert default_cache_path() == expected
    with Cache() as c:  # parent directories created
        assert c.path == expected
    assert expected.is_file()

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fallback = tmp_path / "home" / ".local" / "share" / "genreml" / "cache.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_cache_path() == fallback
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # the XDG spec says: ignore it
    assert default_cache_path() == fallback


def test_wal_mode_foreign_keys_and_busy_timeout(tmp_path, cache):
    assert sql(cache.path, "PRAGMA journal_mode") == [("wal",)]
    with cache._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    # WAL: a reader in the middle of a transaction does not block a writer.
    reader = sqlite3.connect(cache.path, isolation_level=None, timeout=0)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM tracks").fetchone() == (0,)
        path, _ = stored(tmp_path, cache, "a.flac")
        assert reader.execute("SELECT count(*) FROM tracks").fetchone() == (0,)  # its snapshot
    finally:
        reader.close()
    assert cache.lookup(path, MODELS) is not None


# --------------------------------------------------------------------------- store / lookup


def test_store_lookup_round_trip(tmp_path, cache, monkeypatch):
    path, want = stored(tmp_path, cache, "a.flac")
    for models in (MODELS, [GENRE, EMOTION]):
        got = cache.lookup(path, models)
        assert got is not None and got.path == str(path)
        assert_same(got, want)
    many = cache.lookup_many([path, tmp_path / "missing.flac"], MODELS)
    assert list(many) == [path]  # hits only, keyed as given
    assert_same(many[path], want)
    only_emotion = cache.lookup(path, {"emotion": EMOTION})
    assert only_emotion is not None and set(only_emotion.heads) == {"emotion"}
    monkeypatch.chdir(tmp_path)
    assert cache.lookup("a.flac", MODELS) is not None  # relative paths are made absolute


def test_lookup_needs_a_fresh_result_of_every_model(tmp_path, cache):
    path, _ = stored(tmp_path, cache, "a.flac", emotion=None)
    assert cache.lookup(path, MODELS) is None
    assert cache.lookup(path, {"genre": GENRE}) is not None
    assert cache.lookup(path, {"emotion": GENRE}) is None  # right model, wrong task
    assert cache.lookup(path, [ModelIdentity("genre-net", "1.1", GENRE.sha256)]) is None


def test_changed_size_or_mtime_misses_until_update_stat(tmp_path, cache):
    path, _ = stored(tmp_path, cache, "a.flac")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.lookup(path, MODELS) is None
    assert cache.lookup_many([path], MODELS) == {}
    assert cache.update_stat(path)  # e.g. genreml rewrote the tags
    assert cache.lookup(path, MODELS) is not None

    mtime = os.stat(path).st_mtime_ns
    with open(path, "ab") as f:
        f.write(b"more")
    os.utime(path, ns=(mtime, mtime))  # same mtime, other size
    assert cache.lookup(path, MODELS) is None

    os.remove(path)
    assert cache.lookup(path, MODELS) is None
    assert cache.update_stat(tmp_path / "never-stored.flac", stat=st) is False


def test_store_keeps_the_stat_taken_before_analysis(tmp_path, cache):
    path = audio_file(tmp_path, "a.flac")
    before = os.stat(path)
    with open(path, "ab") as f:  # the file changes while it is analysed
        f.write(b"x")
    cache.store(make_result(path), "fp", stat=before)
    assert cache.lookup(path, MODELS) is None


def test_lookup_many_across_chunks(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(cache_results, "_CHUNK", 3)
    paths = [audio_file(tmp_path, f"d/{i}.flac") for i in range(10)]
    cache.store_many([(make_result(p, seed=i), f"fp{i}", None) for i, p in enumerate(paths)])
    for p in paths[:2]:
        p.write_bytes(b"changed")
    asked = [str(p) if i % 2 else p for i, p in enumerate(paths)]  # str and Path alike
    found = cache.lookup_many(asked, MODELS)
    assert list(found) == asked[2:]
    for i, key in enumerate(asked[2:], start=2):
        assert_same(found[key], make_result(paths[i], seed=i))


def test_store_replaces_the_same_task_only(tmp_path, cache):
    path, first = stored(tmp_path, cache, "a.flac", seed=1)
    second = make_result(path, seed=2, emotion=None)
    cache.store(second, "fp")
    got = cache.lookup(path, MODELS)
    assert got is not None
    np.testing.assert_array_equal(got.heads["genre"].probs, second.heads["genre"].probs)
    np.testing.assert_array_equal(got.heads["emotion"].probs, first.heads["emotion"].probs)
    assert sql(cache.path, "SELECT count(*) FROM results") == [(2,)]
    expected_rows = len(GENRE_LABELS) + len(EMOTION_LABELS)  # the old genre rows are gone
    assert sql(cache.path, "SELECT count(*) FROM probabilities") == [(expected_rows,)]


def test_threshold_is_kept(tmp_path, cache):
    path, _ = stored(tmp_path, cache, "a.flac", genre_threshold=0.35,
                     genre_probs=[0.4, 0.3, 0.9, 0.1])
    got = cache.lookup(path, MODELS)
    assert got is not None
    assert got.heads["genre"].threshold == 0.35
    assert got.heads["emotion"].threshold is None
    assert [label for label, _ in got.genres] == ["pop", "rock"]
    assert cache.info(path)["results"]["genre"]["threshold"] == 0.35


def test_store_rejects_inconsistent_results(tmp_path, cache):
    path = audio_file(tmp_path, "a.flac")
    bad_shape = make_result(path)
    bad_shape.heads["genre"].timeline = bad_shape.heads["genre"].timeline[:, :2]
    with pytest.raises(ValueError, match="timeline shape"):
        cache.store(bad_shape, "fp")
    nan = make_result(path)
    nan.heads["emotion"].probs[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        cache.store(nan, "fp")
    assert cache.get(path) is None  # nothing half-written


def test_path_that_is_not_utf8(tmp_path, cache):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.flac"
    with open(raw, "wb") as f:
        f.write(b"\0" * 10)
    path = os.fsdecode(raw)
    cache.store(make_result(path), "fp")
    assert cache.lookup(path, MODELS) is not None
    assert cache.query("emotion", "calm")[0].path == path
    assert os.fsencode(cache.info(path)["path"]) == raw


def test_get_and_info_ignore_stat_and_models(tmp_path, cache):
    path, want = stored(tmp_path, cache, "a.flac", fingerprint=FP_A)
    path.write_bytes(b"changed")
    assert cache.lookup(path, MODELS) is None
    assert_same(cache.get(path), want)
    info = cache.info(path)
    assert info["fingerprint"] == FP_A and info["duration"] == want.duration
    assert info["analysed_at"].tzinfo == timezone.utc
    assert abs(datetime.now(timezone.utc) - info["analysed_at"]) < timedelta(minutes=5)
    assert info["results"]["genre"]["model"] == GENRE.id
    assert info["results"]["emotion"]["n_clips"] == 5
    assert cache.get(tmp_path / "other.flac") is None and cache.info(tmp_path / "x") is None


def test_remove_cascades(tmp_path, cache):
    path, _ = stored(tmp_path, cache, "a.flac")
    assert cache.remove(path)
    assert not cache.remove(path)
    for table in ("tracks", "results", "probabilities"):
        assert sql(cache.path, f"SELECT count(*) FROM {table}") == [(0,)]


# --------------------------------------------------------------------------- moves


def test_moved_file_is_found_by_fingerprint_and_relocated(tmp_path, cache):
    old, want = stored(tmp_path, cache, "old/a.flac", fingerprint=FP_A)
    new = tmp_path / "new" / "b.flac"
    new.parent.mkdir()
    os.rename(old, new)
    assert cache.lookup(new, MODELS) is None
    assert cache.lookup_fingerprint(fp("other"), MODELS, path=new) is None
    found = cache.lookup_fingerprint(FP_A, MODELS, path=new)
    assert found is not None and found.path == str(new)
    assert_same(found, want)
    assert_same(cache.lookup(new, MODELS), want)  # the next run hits by path
    assert cache.get(old) is None
    assert sql(cache.path, "SELECT count(*) FROM tracks") == [(1,)]


def test_copied_file_gets_its_own_row(tmp_path, cache):
    original, want = stored(tmp_path, cache, "a.flac", fingerprint=FP_A)
    copy = tmp_path / "copy.flac"
    shutil.copy2(original, copy)
    assert cache.lookup_fingerprint(FP_A, MODELS, path=copy) is not None
    assert_same(cache.lookup(original, MODELS), want)  # no ping-pong between the two
    assert_same(cache.lookup(copy, MODELS), want)


def test_lookup_fingerprint_without_path_changes_nothing(tmp_path, cache):
    old, _ = stored(tmp_path, cache, "a.flac", fingerprint=FP_A)
    found = cache.lookup_fingerprint(FP_A, MODELS)
    assert found is not None and found.path == str(old)
    assert cache.lookup_fingerprint(FP_A, {"genre": ModelIdentity("x", "1", "c" * 64)}) is None


def test_relocate_replaces_the_row_at_the_target(tmp_path, cache):
    a, want = stored(tmp_path, cache, "a.flac", seed=1)
    b, _ = stored(tmp_path, cache, "b.flac", seed=2)
    os.replace(a, b)
    assert cache.relocate(a, b)
    assert_same(cache.lookup(b, MODELS), want)
    assert cache.get(a) is None
    assert sql(cache.path, "SELECT count(*) FROM tracks") == [(1,)]
    assert not cache.relocate(tmp_path / "unknown.flac", b)
    c = tmp_path / "c.flac"
    os.rename(b, c)
    assert cache.relocate(cache.get(b), c)  # a TrackResult stands for its path
    assert_same(cache.lookup(c, MODELS), want)


# --------------------------------------------------------------------------- staleness


def test_new_model_marks_results_stale(tmp_path, cache):
    a, _ = stored(tmp_path, cache, "a.flac")
    b, _ = stored(tmp_path, cache, "b.flac")
    assert cache.mark_stale(MODELS) == 0
    new_genre = ModelIdentity("genre-net", "1.0", "c" * 64)  # a retrained file
    current = {"genre": new_genre, "emotion": EMOTION}
    assert cache.mark_stale(current) == 2
    assert cache.lookup(a, current) is None
    assert cache.lookup(a, MODELS) is None  # the old genre result is stale now
    assert cache.lookup(a, {"emotion": EMOTION}) is not None
    assert cache.stale_paths() == sorted([str(a), str(b)])
    assert cache.paths_needing_analysis(current) == sorted([str(a), str(b)])
    assert cache.info(b)["results"]["genre"]["stale"] is True

    cache.store(make_result(a, genre=new_genre), "fp-a")
    assert cache.lookup(a, current) is not None
    assert cache.stale_paths() == [str(b)]
    assert cache.paths_needing_analysis(current) == [str(b)]
    assert cache.paths_needing_analysis(current, roots=[a]) == []

    new_version = ModelIdentity("genre-net", "2.0", new_genre.sha256)
    assert cache.mark_stale({"genre": new_version}) == 1  # b's result was already stale
    assert cache.mark_stale({"genre": GENRE}) == 0  # rolled back: b's result is current again
    assert cache.lookup(b, MODELS) is not None
    assert cache.stale_paths() == [str(a)]
    # A list matches by model name.
    assert cache.mark_stale([ModelIdentity("emotion-net", "1.1", EMOTION.sha256)]) == 2


# --------------------------------------------------------------------------- playlists


def test_query_orders_and_filters(tmp_path, cache):
    lib, sibling = tmp_path / "lib", tmp_path / "library2"  # "lib" is a string prefix of it
    tracks = {  # name: (calm, jazz)
        lib / "a.flac": (0.9, 0.6),
        lib / "sub" / "b.flac": (0.7, 0.1),
        lib / "c.flac": (0.4, 0.3),
        sibling / "d.flac": (0.8, 0.9),
    }
    for i, (path, (calm, jazz)) in enumerate(tracks.items()):
        audio_file(path.parent, path.name)
        cache.store(make_result(path, n_clips=3 + i, emotion_probs=[calm, 0.1, 0.1],
                                genre_probs=[0.2, jazz, 0.1, 0.1]), f"fp{i}")
    a, b, c, d = (str(p) for p in tracks)

    hits = cache.query("emotion", "calm")
    assert [h.path for h in hits] == [a, d, b, c]
    assert hits[0] == Hit(a, pytest.approx(0.9), 10.5)
    assert [h.path for h in cache.query("emotion", "calm", min_prob=0.6)] == [a, d, b]
    assert [h.path for h in cache.query("emotion", "calm", roots=[lib])] == [a, b, c]
    assert [h.path for h in cache.query("emotion", "calm", roots=[lib / "sub", d])] == [d, b]
    # Default genre bar: the genre model's own threshold (0.25): c's 0.3 passes.
    assert [h.path for h in cache.query("emotion", "calm", genre="jazz")] == [a, d, c]
    assert [h.path for h in cache.query("emotion", "calm", genre="jazz",
                                        min_genre_prob=0.5)] == [a, d]
    assert [h.path for h in cache.query("emotion", "calm", limit=2)] == [a, d]
    assert [h.path for h in cache.query("genre", "jazz", min_prob=0.5)] == [d, a]
    assert cache.query("genre", "calm") == []  # labels belong to a task

    cache.mark_stale({"emotion": ModelIdentity("emotion-net", "2.0", "d" * 64)})
    assert cache.query("emotion", "calm") == []
    assert len(cache.query("emotion", "calm", include_stale=True)) == 4


# --------------------------------------------------------------------------- job queue


def test_job_lifecycle(tmp_path, cache):
    path = tmp_path / "x.flac"
    assert cache.enqueue(path, now=T0)
    assert not cache.enqueue(path, now=T0)  # already pending
    assert cache.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0}
    job = cache.claim(now=T0)
    assert job is not None
    assert (job.path, job.state, job.attempts) == (str(path), "running", 1)
    assert cache.claim(now=T0) is None
    assert cache.enqueue(path, now=T0)  # changed again while being analysed
    assert cache.complete(job.id, now=T0).state == "done"
    assert cache.counts() == {"pending": 1, "running": 0, "done": 1, "failed": 0}
    assert cache.prune_jobs(timedelta(days=1), now=T0 + timedelta(days=2)) == 1
    assert cache.counts()["done"] == 0
    with pytest.raises(KeyError):
        cache.complete(10_000)


def test_failed_job_backs_off_then_gives_up(tmp_path, cache):
    path = tmp_path / "x.flac"
    cache.enqueue(path, now=T0)
    now = T0
    for attempt in range(1, 5):
        job = cache.claim(now=now)
        assert job is not None and job.attempts == attempt
        after = cache.fail(job.id, f"boom {attempt}", max_attempts=5, backoff_base=30.0, now=now)
        assert after.state == "pending"
        assert after.not_before == now + timedelta(seconds=30.0 * 2 ** (attempt - 1))
        assert cache.claim(now=after.not_before - timedelta(seconds=1)) is None
        now = after.not_before
    job = cache.claim(now=now)
    assert job is not None and job.attempts == 5
    final = cache.fail(job.id, "boom 5", max_attempts=5, now=now)
    assert final.state == "failed" and final.last_error == "boom 5"
    assert cache.failed_jobs() == [final]
    assert cache.claim(now=now + timedelta(days=1)) is None
    assert cache.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 1}
    assert cache.enqueue(path, now=now)  # a failed job does not block a new event


def test_failed_job_merges_into_a_newer_pending_one(tmp_path, cache):
    path = tmp_path / "x.flac"
    cache.enqueue(path, now=T0)
    first = cache.claim(now=T0)
    assert cache.enqueue(path, now=T0)
    retry = cache.fail(first.id, "boom", now=T0)
    assert retry.id != first.id and retry.state == "pending"
    assert cache.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0}


_CLAIM_AND_HANG = """
import sys, time
from tagger.cache import Cache
job = Cache(sys.argv[1]).claim()
print(job.id if job else "none", flush=True)
time.sleep(120)
"""


def test_requeue_running_after_the_daemon_was_killed(tmp_path):
    db = tmp_path / "cache.db"
    with Cache(db) as c:
        assert c.enqueue(tmp_path / "x.flac")
    child = subprocess.Popen([sys.executable, "-c", _CLAIM_AND_HANG, str(db)],
                             stdout=subprocess.PIPE, text=True)
    try:
        claimed = child.stdout.readline().strip()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert claimed.isdigit()
    with Cache(db) as c:
        assert c.counts()["running"] == 1
        assert c.requeue_running() == 1
        assert c.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0}
        job = c.claim()
        assert job is not None and job.id == int(claimed) and job.attempts == 2
        # A job that keeps killing the daemon is given up on.
        assert c.requeue_running(max_attempts=2) == 1
        assert [j.id for j in c.failed_jobs()] == [job.id]


# --------------------------------------------------------------------------- concurrency


def _writer(db: str, files: list[str], shared: list[str], barrier, out) -> None:
    """One process: open the (new) cache, store, enqueue and claim, all at the same time as
    the others."""
    try:
        barrier.wait(timeout=60)
        with Cache(db) as c:
            for i, path in enumerate(files):
                c.store(make_result(path, seed=i), f"fp-{path}")
                c.enqueue(shared[i % len(shared)])
            claimed = []
            while (job := c.claim()) is not None:
                claimed.append(job.id)
                c.complete(job.id)
        out.put(("ok", claimed))
    except BaseException as error:  # reported to the parent, which fails the test
        out.put(("error", repr(error)))


def test_concurrent_writers_from_three_processes(tmp_path):
    db = tmp_path / "cache.db"  # created by the racing processes themselves
    per_process, n_processes = 40, 3
    files = [[str(audio_file(tmp_path, f"p{p}/{i}.flac")) for i in range(per_process)]
             for p in range(n_processes)]
    shared = [str(tmp_path / f"shared{i}.flac") for i in range(10)]
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(n_processes), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(db), files[p], shared, barrier, out))
             for p in range(n_processes)]
    for proc in procs:
        proc.start()
    reports = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [r[0] for r in reports] == ["ok"] * n_processes, reports
    assert [proc.exitcode for proc in procs] == [0] * n_processes
    claimed = [job_id for _, ids in reports for job_id in ids]
    assert len(claimed) == len(set(claimed))  # no job claimed twice
    with Cache(db) as c:
        assert c.counts()["pending"] == 0 and c.counts()["done"] == len(claimed)
        assert len(c.lookup_many([f for fs in files for f in fs], MODELS)) == 120
    assert sql(db, "PRAGMA integrity_check") == [("ok",)]


# --------------------------------------------------------------------------- schema versions


def test_new_file_gets_the_current_schema_version(cache):
    assert sql(cache.path, "PRAGMA user_version") == [(cache_schema.SCHEMA_VERSION,)]


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "cache.db"
    Cache(db).close()
    newer = cache_schema.SCHEMA_VERSION + 1
    sql(db, f"PRAGMA user_version = {newer}")
    with pytest.raises(CacheVersionError, match="was written by a newer genreml"):
        Cache(db)
    assert sql(db, "PRAGMA user_version") == [(newer,)]


NOW = cache_schema.SCHEMA_VERSION  # this release's schema: the tests below fake two more


def _old_cache(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A cache written by the current release at schema NOW, opened by a (fake) later release
    whose SCHEMA_VERSION is NOW + 2."""
    db = tmp_path / "cache.db"
    with Cache(db) as c:
        path, _ = stored(tmp_path, c, "a.flac")
    monkeypatch.setattr(cache_schema, "SCHEMA_VERSION", NOW + 2)
    return db, path


def test_old_schema_is_migrated_step_by_step(tmp_path, monkeypatch):
    db, path = _old_cache(tmp_path, monkeypatch)
    calls = []

    def add_note(conn):
        calls.append(1)
        conn.exec_driver_sql("ALTER TABLE tracks ADD COLUMN note TEXT")

    def fill_note(conn):
        calls.append(2)
        conn.exec_driver_sql("UPDATE tracks SET note = 'migrated'")

    monkeypatch.setattr(cache_schema, "MIGRATIONS", {NOW + 1: fill_note, NOW: add_note})
    with Cache(db) as c:
        assert c.lookup(path, MODELS) is not None
    assert calls == [1, 2]
    assert sql(db, "PRAGMA user_version") == [(NOW + 2,)]
    assert sql(db, "SELECT note FROM tracks") == [("migrated",)]
    Cache(db).close()
    assert calls == [1, 2]  # nothing to do the second time


def test_failed_migration_changes_nothing(tmp_path, monkeypatch):
    db, _ = _old_cache(tmp_path, monkeypatch)

    def add_then_fail(conn):
        conn.exec_driver_sql("ALTER TABLE tracks ADD COLUMN note TEXT")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cache_schema, "MIGRATIONS",
                        {NOW: add_then_fail, NOW + 1: lambda conn: None})
    with pytest.raises(RuntimeError, match="disk on fire"):
        Cache(db)
    assert sql(db, "PRAGMA user_version") == [(NOW,)]
    assert "note" not in [row[1] for row in sql(db, "PRAGMA table_info(tracks)")]


def test_missing_migration_is_refused(tmp_path, monkeypatch):
    db, _ = _old_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(cache_schema, "MIGRATIONS", {
        NOW: lambda conn: conn.exec_driver_sql("ALTER TABLE tracks ADD COLUMN note TEXT")})
    with pytest.raises(CacheVersionError, match=f"no migration from cache schema {NOW + 1}"):
        Cache(db)
    assert sql(db, "PRAGMA user_version") == [(NOW,)]
    assert "note" not in [row[1] for row in sql(db, "PRAGMA table_info(tracks)")]


def test_schema_1_gains_the_tagged_column(tmp_path):
    db = tmp_path / "cache.db"
    with Cache(db) as c:
        path, _ = stored(tmp_path, c, "a.flac")
    # as genreml with schema 1 left it: no tagged column, no embeddings table
    sql(db, "ALTER TABLE tracks DROP COLUMN tagged")
    sql(db, "ALTER TABLE tracks DROP COLUMN settled")
    sql(db, "ALTER TABLE tracks DROP COLUMN written")
    sql(db, "DROP TABLE embeddings")
    sql(db, "PRAGMA user_version = 1")
    with Cache(db) as c:
        assert c.lookup(path, MODELS) is not None
        assert c.summary() == {"tracks": 1, "tagged": 0, "stale": 0, "failed": 0}
    assert sql(db, "PRAGMA user_version") == [(NOW,)]
    assert sql(db, "SELECT count(*) FROM embeddings") == [(0,)]  # schema 3's table, empty
    assert sql(db, "SELECT written FROM tracks") == [(None,)]  # schema 4's column


def test_written_values_are_recorded_and_outlive_a_new_analysis(tmp_path, cache):
    path, result = stored(tmp_path, cache, "a.flac")
    assert cache.written([path]) == {}
    cache.update_stat(path, tagged=True, written={"genres": ["Jazz"], "mood": "calm"})
    cache.store(result, FP_A)  # analysed again: "tagged" is reset, "written" is not
    assert cache.tagged_result(path) is None
    assert cache.written([path]) == {str(path): {"genres": ["Jazz"], "mood": "calm"}}
    sql(cache.path, "UPDATE tracks SET written = NULL, tagged = 1")  # tagged by schema 3
    decided = cache.written([path])[str(path)]
    assert decided["genres"] == [g for g, _ in result.genres] and decided["genres"]
    sql(cache.path, "UPDATE tracks SET written = 'not json'")
    assert cache.written([path])[str(path)]["genres"] == []
    assert cache.written([path])[str(path)]["damaged"]


def test_embeddings_round_trip_and_belong_to_one_backbone_and_stat(tmp_path, cache):
    from tagger.result import ClipEmbeddings

    path = audio_file(tmp_path, "a.flac")
    result = make_result(path)
    clips = np.random.default_rng(0).normal(size=(result.clips, 5)).astype(np.float16)
    result.embedding = ClipEmbeddings("b" * 64, clips)
    cache.store(result, FP_A)
    got = cache.embedding(path, "b" * 64)
    assert got is not None and got.fingerprint == FP_A and got.duration == result.duration
    np.testing.assert_array_equal(got.embeddings.clips, clips)
    np.testing.assert_array_equal(got.clip_starts, result.clip_starts)
    pooled = sql(cache.path, "SELECT pooled FROM embeddings")[0][0]
    np.testing.assert_array_equal(np.frombuffer(pooled, "<f2"), clips.astype(np.float32)
                                  .mean(0).astype(np.float16))
    assert cache.embedding(path, "c" * 64) is None  # another backbone's: stale
    result.embedding = None
    cache.store(result, FP_A)  # a re-heading keeps the stored embeddings
    assert cache.embedding(path, "b" * 64) is not None
    with open(path, "ab") as f:
        f.write(b"\0")  # the file changed: its embeddings no longer describe it
    assert cache.embedding(path, "b" * 64) is None
    cache.remove(path)
    assert sql(cache.path, "SELECT count(*) FROM embeddings") == [(0,)]


def test_moved_match_needs_the_same_duration_and_size_class(tmp_path, cache):
    old, _ = stored(tmp_path, cache, "old.flac", fingerprint=FP_A)
    os.unlink(old)
    big = audio_file(tmp_path, "big.flac", size=3 << 20)  # 3 MiB: not the 100-byte file
    assert cache.lookup_fingerprint(FP_A, MODELS, path=big) is None
    same = audio_file(tmp_path, "same.flac", size=100)
    assert cache.lookup_fingerprint(fp("a", duration=20.0), MODELS, path=same) is None
    assert cache.lookup_fingerprint(FP_A, MODELS, path=same) is not None


def test_summary_counts_tracks_tagged_stale_and_failed(tmp_path, cache):
    assert cache.summary() == {"tracks": 0, "tagged": 0, "stale": 0, "failed": 0}
    a, _ = stored(tmp_path, cache, "a.flac")
    stored(tmp_path, cache, "b.flac")
    stored(tmp_path, cache, "c.flac", genre=ModelIdentity("genre-net", "0.9", "c" * 64))
    assert cache.update_stat(a, tagged=True)
    cache.mark_stale(MODELS)
    cache.enqueue(tmp_path / "bad.flac")
    job = cache.claim()
    cache.fail(job.id, "broken", max_attempts=1)
    assert cache.summary() == {"tracks": 3, "tagged": 1, "stale": 1, "failed": 1}
    stored(tmp_path, cache, "a.flac")  # analysed again: not in its tags until written
    assert cache.summary()["tagged"] == 0
