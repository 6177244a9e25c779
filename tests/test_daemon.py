"""``genreml watch`` and ``genreml status``: real observers (inotify and polling) on temporary
folders, real files, a real cache and a real tiny model; the service runs, crashes and stops
as a real process where that is the point (kill -9, SIGTERM, sd_notify)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import onnx_models as om
from audiogen import make_audio
from tagger.cache import Cache
from tagger.cli import main
from tagger.model import load_models
from tagger.watch import (
    Daemon,
    Notifier,
    WatchSettings,
    configure_logging,
    is_ignored_name,
    needs_polling,
)
from tagger.tagging import Tagger
from tagger.tags import read_tags, write_tags

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    om.band_model(folder / "band.onnx")
    return folder


@pytest.fixture(scope="module")
def models(models_dir):
    return load_models(models_dir, device="cpu", threads=1)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    """Encoded files to copy from: low (200 Hz -> Low/calm) and high (6 kHz -> High/tense)."""
    folder = tmp_path_factory.mktemp("sounds")
    return {
        "low.flac": make_audio(folder / "low.flac", seconds=3.0, sr=16000, freq=200.0),
        "low.wav": make_audio(folder / "low.wav", seconds=4.0, sr=16000, freq=200.0),
        "high.mp3": make_audio(folder / "high.mp3", seconds=3.0, sr=44100, freq=6000.0),
    }


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def total_jobs(cache: Cache) -> int:
    return sum(cache.counts().values())


def done_paths(cache: Cache) -> list[str]:
    return [j.path for j in cache.recent_jobs("done")]


class FakeClock:
    """A monotonic clock that moves only when told: settling without sleeps, so "nothing
    happened while the file was quiet" holds however slowly a loaded machine runs."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def settle_passes(daemon, clock: FakeClock | None = None, seconds: float = 0.0,
                  passes: int = 3) -> None:
    """Move ``clock`` on by ``seconds``, then wait until the daemon's main loop has looked at
    its settling files ``passes`` times since (every file due by then has been submitted)."""
    if clock is not None:
        clock.advance(seconds)
    assert daemon.settler.wait_passes(passes, timeout=60), "the main loop stalled"


def advance_until(daemon, clock: FakeClock, predicate, step: float, what: str) -> None:
    """Let the daemon's time pass ``step`` seconds at a time until ``predicate()``: robust
    to an event that comes late and restarts a file's quiet time."""
    wait_for(lambda: (settle_passes(daemon, clock, step, passes=1), predicate())[1],
             what=what)


def quiesce(daemon, clock: FakeClock, paths, cache: Cache, jobs: int) -> None:
    """After our own tag writes: wait until each of ``paths`` has been seen changing (its
    event came), let them all settle, and check that no new job came of it."""
    wait_for(lambda: all(str(p) in daemon.settler for p in paths), what="our writes seen")
    advance_until(daemon, clock, lambda: len(daemon.settler) == 0, 60.0, "settled")
    settle_passes(daemon)
    assert total_jobs(cache) == jobs


@contextlib.contextmanager
def daemon_thread(models, roots, cache_path, notifier=None, clock=None, **settings):
    """A daemon in a thread of this process (models loaded once for the module); ``clock``
    drives its settling (default: the real monotonic clock)."""
    cache = Cache(cache_path)
    daemon = Daemon(roots, functools.partial(Tagger, models, cache),
                    WatchSettings(**settings), notifier=notifier or Notifier({}),
                    clock=clock or time.monotonic)
    errors: list[BaseException] = []

    def run():
        try:
            daemon.run()
        except BaseException as err:  # reported by the test, not lost in the thread
            errors.append(err)
            daemon.ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    daemon.ready.wait(60)
    assert not errors, errors
    try:
        yield daemon, cache
    finally:
        daemon.stop()
        thread.join(15)
        assert not thread.is_alive()
        cache.close()
    assert not errors, errors


def write_slowly(path: Path, data: bytes, parts: int, pause: float, check) -> float:
    """Append ``data`` to ``path`` in ``parts`` writes (each its own open/close, so inotify
    sees close-write every time), calling ``check()`` during every pause. Returns the
    monotonic time of the last write."""
    size = -(-len(data) // parts)
    last = time.monotonic()
    for start in range(0, len(data), size):
        with open(path, "ab") as f:
            f.write(data[start:start + size])
        last = time.monotonic()
        end = last + pause
        while time.monotonic() < end:
            check()
            time.sleep(0.05)
    return last


def spawn(args, log_path: Path, env=None) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "tagger.cli", "watch", *map(str, args)],
                                stdout=log, stderr=log, env={**os.environ, **(env or {})})


def log_lines(*paths: Path) -> list[str]:
    return [line for p in paths for line in p.read_text().splitlines()]


def outcome_lines(lines, name: str) -> list[str]:
    """The daemon's one line per tagged file: ``tagged|unchanged PATH: ... (source)``."""
    return [line for line in lines
            if re.search(rf"tagger\.watch\.workers: (tagged|unchanged) \S*/{re.escape(name)}: ",
                         line)]


# --------------------------------------------------------------------------- settling (inotify)


def test_slow_download_is_tagged_once_after_it_settles(tmp_path, models, sounds):
    music = tmp_path / "music"
    music.mkdir()
    data = sounds["low.wav"].read_bytes()
    clock = FakeClock()
    with daemon_thread(models, [music], tmp_path / "cache.db", clock=clock,
                       settle=1.0) as (daemon, cache):
        assert daemon.roots[0].kind == "native"
        target = music / "slow.wav"

        def nothing_yet():
            assert total_jobs(cache) == 0, "queued while still growing"
            assert daemon.stats["done"] == 0

        # Growth in 6 parts, each less than the settle time after the one before (on the
        # daemon's clock), however long the writes take on a busy machine.
        size = -(-len(data) // 6)
        for start in range(0, len(data), size):
            with open(target, "ab") as f:
                f.write(data[start:start + size])
            wait_for(lambda: daemon.settler.quiet(str(target)) == 0.0, what="the write seen")
            settle_passes(daemon, clock, 0.9)
            nothing_yet()
        advance_until(daemon, clock, lambda: daemon.stats["done"] == 1, 0.2, "slow.wav tagged")
        assert read_tags(target).genres == ["Low"] and read_tags(target).mood == "calm"
        assert done_paths(cache) == [str(target)]
        # Our own tag write (an atomic rename over the file) must not queue it again.
        quiesce(daemon, clock, [target], cache, jobs=1)

        # A file written in one go but kept open: no job until its writer closes it.
        held = music / "held.flac"
        with open(held, "wb") as f:
            f.write(sounds["low.flac"].read_bytes())
            f.flush()
            wait_for(lambda: str(held) in daemon.settler, what="held.flac seen")
            settle_passes(daemon, clock, 3600.0 * 3)  # far past any settle time or grace
            assert total_jobs(cache) == 1
        advance_until(daemon, clock, lambda: daemon.stats["done"] == 2, 0.5,
                      "held.flac tagged after close")
        quiesce(daemon, clock, [held], cache, jobs=2)
        assert daemon.stats["done"] == 2 and daemon.stats["analysed"] == 2


def test_part_rename_corrupt_file_retries_and_status(tmp_path, models, sounds, capsys):
    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    cache_path = tmp_path / "cache.db"
    clock = FakeClock()
    with daemon_thread(models, [music], cache_path, clock=clock, settle=0.5, max_attempts=2,
                       retry_delay=0.2) as (daemon, cache):
        # A corrupt file first: logged, retried once, given up on; the rest goes on.
        (music / "album" / "bad.flac").write_bytes(b"fLaC but not really" * 200)
        # A browser download: written as .part (three writes), renamed when complete.
        part = music / "album" / "new.mp3.part"
        write_slowly(part, sounds["high.mp3"].read_bytes(), parts=3, pause=0.0,
                     check=lambda: None)
        # Moved in from outside the watched tree. Its event comes after those of the .part
        # writes: once it is seen, they have been handled.
        shutil.copy(sounds["low.flac"], tmp_path / "good.flac")
        os.rename(tmp_path / "good.flac", music / "good.flac")
        wait_for(lambda: str(music / "good.flac") in daemon.settler, what="good.flac seen")
        assert str(part) not in daemon.settler  # .part files never settle, so never queue
        settle_passes(daemon, clock, 60.0)  # far past the settle time: what waited is queued
        assert total_jobs(cache) == 2  # bad.flac and good.flac, never the .part
        os.rename(part, music / "album" / "new.mp3")
        # Ignored names that must stay ignored.
        for name in (".hidden.flac", "song.flac~", "x.flac.crdownload", "y.flac.!qB"):
            shutil.copy(sounds["low.flac"], music / name)

        advance_until(daemon, clock, lambda: daemon.stats["done"] == 2
                      and daemon.stats["failed"] == 1, 0.5, "two tagged, one failed")
        assert read_tags(music / "album" / "new.mp3").genres == ["High"]
        assert read_tags(music / "good.flac").mood == "calm"
        assert sorted(map(os.path.basename, done_paths(cache))) == ["good.flac", "new.mp3"]
        [failed] = cache.failed_jobs()
        assert failed.path.endswith("bad.flac") and failed.attempts == 2
        assert "not decodable audio" in failed.last_error
        assert daemon.stats["errors"] == 2

        capsys.readouterr()
        assert main(["status", "--cache", str(cache_path)]) == 1  # 1: some files failed
        out = capsys.readouterr().out
        assert f"daemon: running (pid {os.getpid()})" in out
        assert "0 pending, 0 running, 2 done, 1 failed" in out
        assert "last done: " in out
        assert re.search(r"bad.flac\n +not decodable audio.* \(2 attempts, last ", out), out
    capsys.readouterr()
    assert main(["status", "--cache", str(cache_path)]) == 1
    assert "daemon: not running" in capsys.readouterr().out
    assert main(["status", "--cache", str(tmp_path / "none.db")]) == 1


def test_ignored_names():
    for name in ("a.mp3.part", "a.flac.crdownload", "a.mp3.!qB", "a.mp3~", ".a.mp3",
                 ".a.mp3.genreml-1a2b3c4d.tmp", "a.mp3.tmp", "a.opus.partial"):
        assert is_ignored_name(f"/music/{name}"), name
    for name in ("a.mp3", "Part 2.flac", "tmp.ogg", "a~b.m4a"):
        assert not is_ignored_name(f"/music/{name}"), name


# --------------------------------------------------------------------------- polling, mounts


def test_poll_mode_tags_without_a_loop(tmp_path, models, sounds):
    music = tmp_path / "music"
    music.mkdir()
    clock = FakeClock()
    with daemon_thread(models, [music], tmp_path / "cache.db", clock=clock, settle=0.3,
                       poll=True, poll_interval=0.3) as (daemon, cache):
        assert daemon.roots[0].kind == "polling"
        assert daemon.roots[0].quiet == pytest.approx(0.9)  # settle + 2 poll intervals
        shutil.copy(sounds["high.mp3"], music / "polled.mp3")
        advance_until(daemon, clock, lambda: daemon.stats["done"] == 1, 0.5,
                      "polled.mp3 tagged")
        assert read_tags(music / "polled.mp3").mood == "tense"
        # A poll sees our own write and it settles: still one job.
        quiesce(daemon, clock, [music / "polled.mp3"], cache, jobs=1)
        assert daemon.stats["analysed"] == 1


def test_network_and_fuse_file_systems_are_polled(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(textwrap.dedent("""\
        /dev/vda / ext4 rw,relatime 0 0
        server:/export/music /srv/nfs nfs4 rw,relatime 0 0
        //nas/music /srv/smb cifs rw 0 0
        me@host: /srv/with\\040space fuse.sshfs rw 0 0
        /dev/sdb1 /srv/ntfs fuseblk rw 0 0
        tmpfs /srv/nfs/inner tmpfs rw 0 0
        """))
    assert needs_polling("/srv/nfs/Album/a.flac", mounts) == "nfs4"
    assert needs_polling("/srv/smb", mounts) == "cifs"
    assert needs_polling("/srv/with space/x", mounts) == "fuse.sshfs"
    assert needs_polling("/srv/ntfs/music", mounts) is None      # a local disk through FUSE
    assert needs_polling("/srv/nfs/inner/a", mounts) is None     # the innermost mount counts
    assert needs_polling("/srv/nfsx", mounts) is None            # a prefix is not a parent
    assert needs_polling("/home/me/Music", mounts) is None
    assert needs_polling(tmp_path) is None  # this machine's real table: a local disk


# --------------------------------------------------------------------------- folders, catch-up


def test_removed_folder_is_watched_again_and_rescanned(tmp_path, models, sounds):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with daemon_thread(models, [inbox], tmp_path / "cache.db", settle=0.3) as (daemon, cache):
        root = daemon.roots[0]
        shutil.rmtree(inbox)
        wait_for(lambda: not root.watched, what="the watch dropped")
        # The folder comes back with a file already in it (a share mounted again)...
        staging = tmp_path / "staging"
        staging.mkdir()
        shutil.copy(sounds["low.flac"], staging / "was-there.flac")
        os.rename(staging, inbox)
        wait_for(lambda: root.watched, what="watched again")
        wait_for(lambda: daemon.stats["done"] == 1, what="rescan tagged the file")
        # ...and new files are seen as they arrive.
        shutil.copy(sounds["high.mp3"], inbox / "arrived.mp3")
        wait_for(lambda: daemon.stats["done"] == 2, what="new file tagged")
        assert read_tags(inbox / "was-there.flac").genres == ["Low"]
        assert read_tags(inbox / "arrived.mp3").genres == ["High"]


def test_catch_up_scan_after_downtime(tmp_path, models, sounds):
    music = tmp_path / "music"
    music.mkdir()
    cache_path = tmp_path / "cache.db"
    shutil.copy(sounds["low.flac"], music / "old.flac")
    (music / "broken.mp3").write_bytes(b"ID3 nothing useful" * 100)
    with daemon_thread(models, [music], cache_path, settle=0.3, max_attempts=1) as (d, cache):
        wait_for(lambda: d.stats["done"] == 1 and d.stats["failed"] == 1, what="first run")
    # While nobody watches: two new files, and another program edits old.flac's tags.
    shutil.copy(sounds["high.mp3"], music / "new1.mp3")
    (music / "sub").mkdir()
    shutil.copy(sounds["low.wav"], music / "sub" / "new2.wav")
    write_tags(music / "old.flac", ["Ambient"], None, "force")
    with daemon_thread(models, [music], cache_path, settle=0.3, max_attempts=1) as (d, cache):
        wait_for(lambda: d.stats["done"] == 3, what="catch-up done")
        # The scan is over and all it queued is done: a retry of broken.mp3 would show now.
        wait_for(lambda: not d.scanning and cache.counts()["pending"] == 0
                 and cache.counts()["running"] == 0, what="scan and queue finished")
        # New files analysed; the edited one found by its fingerprint, not analysed again;
        # the broken one, unchanged since it was given up on, not retried.
        assert d.stats["analysed"] == 2 and d.stats["moved"] == 1
        assert d.stats["errors"] == 0
        assert read_tags(music / "sub" / "new2.wav").genres == ["Low"]
        assert read_tags(music / "old.flac").genres == ["Ambient"]  # fill: the edit stays


def test_catch_up_reheads_before_it_decodes(tmp_path, models, models_dir, sounds):
    """New heads on the same backbone: the catch-up queues the cached files first (their
    embeddings give the new result without decoding), the file that needs decoding last."""
    music = tmp_path / "music"
    music.mkdir()
    cache_path = tmp_path / "cache.db"
    for name in ("b-low.flac", "c-high.mp3"):
        shutil.copy(sounds[name.split("-", 1)[1]], music / name)
    with daemon_thread(models, [music], cache_path, settle=0.3) as (d, cache):
        wait_for(lambda: d.stats["done"] == 2, what="first run")
    shutil.copy(sounds["low.wav"], music / "a-new.wav")  # first by name, needs decoding
    v2 = tmp_path / "v2"
    v2.mkdir()
    (backbone,) = models_dir.glob("backbone-*.onnx")
    shutil.copy(backbone, v2)
    om.band_model(v2 / "band.onnx", version="2")
    # settle 0: every file goes through the scan's queueing now, none through the settler
    with daemon_thread(load_models(v2, device="cpu", threads=1), [music], cache_path,
                       settle=0.0) as (d, cache):
        wait_for(lambda: d.stats["done"] == 3, what="catch-up done")
        assert d.stats["reheaded"] == 2 and d.stats["analysed"] == 1
        order = [Path(j.path).name for j in sorted(cache.recent_jobs("done"), key=lambda j: j.id)]
        assert order[-3:] == ["b-low.flac", "c-high.mp3", "a-new.wav"]


# --------------------------------------------------------------------------- logs, usage


def test_journal_log_format(tmp_path, monkeypatch):
    """Under systemd (stderr is the stream $JOURNAL_STREAM names): syslog priority prefixes,
    no timestamps; elsewhere timestamps."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = tmp_path / "journal"
    try:
        with open(out, "w") as stream:
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            configure_logging(0, stream)
            log = logging.getLogger("tagger.watch.workers")
            log.info("tagged x")
            log.error("failed y")
            log.debug("not shown")
            logging.getLogger("watchdog.observers").info("not shown either")
            monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another stream: a terminal, say
            configure_logging(0, stream)
            log.warning("elsewhere")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name in ("watchdog", "tagger.tags", "beets"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    lines = out.read_text().splitlines()
    assert lines[:2] == ["<6>tagger.watch.workers: tagged x", "<3>tagger.watch.workers: failed y"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ WARNING tagger.watch.workers: elsewhere",
                        lines[2])
    assert len(lines) == 3


def test_usage_errors_and_one_daemon_per_cache(tmp_path, models, models_dir):
    music = tmp_path / "music"
    music.mkdir()
    env = {**os.environ, "GENREML_WATCH_DIRS": ""}
    cmd = [sys.executable, "-m", "tagger.cli", "watch", "--models", str(models_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "no folder to watch" in proc.stderr
    proc = subprocess.run([*cmd, "--workers", "0", str(music)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--workers must be >= 1" in proc.stderr
    cache_path = tmp_path / "cache.db"
    with daemon_thread(models, [music], cache_path, settle=0.3):
        env["GENREML_WATCH_DIRS"] = f"{music}{os.pathsep}{tmp_path / 'elsewhere'}"
        proc = subprocess.run([*cmd, "--cache", str(cache_path)], capture_output=True,
                              text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"another genreml watch (pid {os.getpid()}) uses the cache" in proc.stderr


# --------------------------------------------------------------------------- sd_notify


def test_sd_notify_protocol_on_abstract_and_path_sockets(tmp_path):
    name = f"genreml-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000"})
        assert n.enabled and n.watchdog_interval == 1.5
        assert n.ready("watching\n2 folders")
        assert server.recv(4096) == b"READY=1\nSTATUS=watching 2 folders"
        assert n.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
        n.close()
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000",
                      "WATCHDOG_PID": "1"})  # the watchdog is meant for another process
        assert n.watchdog_interval is None
        assert n.status("busy")
        assert server.recv(4096) == b"STATUS=busy"
        n.close()
    quiet = Notifier({})
    assert not quiet.enabled and not quiet.ready() and quiet.watchdog_interval is None


# --------------------------------------------------------------------------- the real service


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, Path]:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(0.2)
    return server, path


def _receive(server: socket.socket, messages: list[str], until, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(socket.timeout):
            messages.append(server.recv(4096).decode())
        if until(messages):
            return
    raise AssertionError(f"sd_notify: no match in {messages}")


def _beets_library(tmp_path: Path, music: Path, files: list[Path]) -> dict[str, str]:
    """A beets library holding ``files`` (imported as-is by `beet import`); its env."""
    beetsdir = tmp_path / "beets"
    beetsdir.mkdir()
    (beetsdir / "config.yaml").write_text(textwrap.dedent(f"""\
        directory: {music}
        library: {beetsdir / 'library.db'}
        plugins: genreml
        genreml:
          auto: no
        """))
    env = {"BEETSDIR": str(beetsdir)}
    proc = subprocess.run([sys.executable, "-m", "beets", "import", "-q", "-A", "-C", "-W",
                           *map(str, files)], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return env


def _beets_fields(env: dict[str, str]) -> dict[str, str]:
    """The flexible fields of the library's only item (read straight from its database)."""
    with contextlib.closing(sqlite3.connect(Path(env["BEETSDIR"]) / "library.db")) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone() == (1,)
        return dict(db.execute("SELECT key, value FROM item_attributes"))


def test_service_notifies_systemd_updates_beets_and_stops_on_sigterm(tmp_path, models_dir,
                                                                     sounds):
    """One real service run: sd_notify on a socket bound here, --beets, and a SIGTERM in the
    middle of a long file (which goes back to the queue; the idle case is in the kill test)."""
    music = tmp_path / "music"
    music.mkdir()
    first = shutil.copy(sounds["low.flac"], music / "a-first.flac")
    # Twenty minutes of audio: still being analysed when SIGTERM comes.
    long = make_audio(music / "b-long.wav", seconds=1200.0, sr=16000, freq=6000.0)
    beets_env = _beets_library(tmp_path, music, [Path(first)])
    server, sock_path = _notify_socket(tmp_path)
    cache_path = tmp_path / "cache.db"
    log_path = tmp_path / "watch.log"
    # --stop-grace 0: the file in progress is abandoned to the queue at once. --clips all
    # --hop 0.25: every clip, four times over, so the long file takes seconds to analyse even
    # on a fast machine and the SIGTERM surely lands in the middle of it.
    proc = spawn(["--settle", "0.5", "--stop-grace", "0", "--clips", "all", "--hop", "0.25",
                  "--beets",
                  "--models", models_dir, "--cache", cache_path, music], log_path,
                 {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "600000", **beets_env})
    try:
        messages: list[str] = []
        _receive(server, messages, lambda m: any("READY=1" in x for x in m), timeout=90)
        _receive(server, messages, lambda m: sum(x == "WATCHDOG=1" for x in m) >= 2, timeout=60)
        assert any(x.startswith("STATUS=watching 1 folder") for x in messages), messages
        cache = Cache(cache_path)
        # SIGTERM as soon as the long file is seen running; the beets checks come after the
        # stop.
        wait_for(lambda: cache.counts()["done"] == 1 and cache.counts()["running"] == 1,
                 timeout=60, interval=0.01, what="first file done, long one running")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - started < 10.0  # within seconds, even on a busy machine
        _receive(server, messages, lambda m: any("STOPPING=1" in x for x in m), timeout=10)
        assert cache.counts() == {"pending": 1, "running": 0, "done": 1, "failed": 0}
        assert read_tags(long).genres == []  # untouched, and whole
        assert not list(music.glob(".*.tmp"))
        cache.close()
        fields = _beets_fields(beets_env)
        assert fields.get("genreml_mood") == "calm" and fields.get("mood") == "calm", fields
        assert float(fields["mood_calm"]) > 0.5
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    text = log_path.read_text()
    assert "abandoned 1 file(s) in progress; they stay queued" in text
    assert "Traceback" not in text


def test_kill_9_then_restart_finishes_every_file_once(tmp_path, models_dir, sounds):
    music = tmp_path / "music"
    music.mkdir()
    make_audio(music / "a-long.wav", seconds=600.0, sr=16000, freq=200.0)
    names = ["a-long.wav"]
    for i in range(5):  # distinct audio: a copy would be found by its fingerprint instead
        name = f"b{i}.{'mp3' if i % 2 else 'flac'}"
        make_audio(music / name, seconds=2.0, sr=16000, freq=(5000.0 if i % 2 else 150.0) + 20 * i)
        names.append(name)
    cache_path = tmp_path / "cache.db"
    # one worker analysing every clip: the long file holds it for seconds, the others wait
    args = ["--settle", "0.5", "--workers", "1", "--clips", "all", "--models", models_dir,
            "--cache", cache_path, music]
    logs = [tmp_path / "run1.log", tmp_path / "run2.log"]
    cache = Cache(cache_path)
    try:
        first = spawn(args, logs[0])
        # the small files may still be settling when the long one starts: wait for them too
        wait_for(lambda: cache.counts()["running"] == 1 and cache.counts()["pending"] == 5,
                 timeout=90, interval=0.02, what="the long file running, the others queued")
        first.kill()  # SIGKILL: no chance to clean up
        first.wait(10)
        assert cache.counts() == {"pending": 5, "running": 1, "done": 0, "failed": 0}
        make_audio(music / "c-added-while-down.flac", seconds=2.0, sr=16000, freq=250.0)
        names.append("c-added-while-down.flac")

        # -v: the daemon says when its own write settled and was not queued again.
        second = spawn([*args, "-v"], logs[1])
        wait_for(lambda: cache.counts()["done"] >= 7 and not cache.counts()["pending"],
                 timeout=120, what="all seven done")

        def own_writes_settled():
            lines = logs[1].read_text().splitlines()
            return all(any(f"/{name}: " in line and "not queued" in line for line in lines)
                       for name in names)

        wait_for(own_writes_settled, timeout=120, what="each tag write seen and not queued")
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    finally:
        for proc in ("first", "second"):
            p = locals().get(proc)
            if p is not None and p.poll() is None:
                p.kill()
        counts = cache.counts()
        cache.close()
    assert counts == {"pending": 0, "running": 0, "done": 7, "failed": 0}
    lines = log_lines(*logs)
    for name in names:  # one outcome each, over both runs; the long one analysed in run 2
        assert [line.endswith("(analysed)") for line in outcome_lines(lines, name)] == [True], \
            (name, outcome_lines(lines, name))
    assert read_tags(music / "a-long.wav").genres == ["Low"]
    assert any("requeued 1 interrupted jobs" in line for line in lines)


# --------------------------------------------------------------------------- systemd units


@pytest.mark.parametrize("unit,user", [("genreml.service", True),
                                       ("genreml-system.service", False)])
def test_systemd_units_verify(tmp_path, unit, user):
    """``systemd-analyze verify`` on the shipped units, with ExecStart pointed at this venv's
    ``genreml`` (verify insists the binary exists). Any warning fails the test."""
    genreml = shutil.which("genreml", path=os.path.dirname(sys.executable))
    assert genreml, "genreml console script not installed in this environment"
    text = (SYSTEMD / unit).read_text()
    # The user unit runs the command $GENREML names (a venv's, pipx's...) through env.
    shipped = "/usr/bin/env ${GENREML}" if user else "/usr/local/bin/genreml"
    assert f"ExecStart={shipped} watch" in text
    for key in ("Type=notify", "NotifyAccess=main", "WatchdogSec=60", "Restart=on-failure"):
        assert key in text.splitlines()
    if not user:
        for key in ("User=genreml", "NoNewPrivileges=yes", "ProtectSystem=strict",
                    "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=genreml"):
            assert key in text.splitlines()
    copy = tmp_path / "genreml.service"
    copy.write_text(text.replace(shipped, genreml))
    cmd = ["systemd-analyze", *(["--user"] if user else []), "verify", str(copy)]
    runtime = tmp_path / "run"
    runtime.mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), \
        proc.stderr + proc.stdout
