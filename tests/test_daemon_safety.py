"""``genreml watch`` does no harm (issue 12): a download still being written is never cut
off, links out of the watched folders are not followed, a deleted cache is recreated.

Real watchdog observers, real writer processes (their open files show under ``/proc``), real
files and caches; the daemon's settling runs on a :class:`FakeClock`, so "not yet tagged"
holds however slowly a loaded machine runs, and nothing waits on a bare sleep.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile as sf

from test_daemon import (  # noqa: F401  (models, models_dir, sounds: fixtures)
    FakeClock,
    advance_until,
    daemon_thread,
    done_paths,
    models,
    models_dir,
    settle_passes,
    sounds,
    total_jobs,
    wait_for,
)
from tagger.cache import Cache
from audiogen import make_audio
from tagger.openfiles import writers
from tagger.watch import OPEN_GRACE, Settler, WatchSettings, configure_logging, quiet_time
from tagger.tags import read_tags

# A writer in its own process, driven line by line over stdin: "open" (hold the file open for
# writing), "write A B" (bytes A:B of the source through the held file), "append A B" (open,
# write, close: a writer that does not stay open), "close". It answers "ok" to each.
WRITER = textwrap.dedent("""\
    import sys
    target, data = sys.argv[1], open(sys.argv[2], "rb").read()
    held = None
    for line in sys.stdin:
        cmd, *args = line.split()
        a, b = (int(x) for x in args) if args else (0, 0)
        if cmd == "open":
            held = open(target, "ab")
        elif cmd == "write":
            held.write(data[a:b])
            held.flush()
        elif cmd == "append":
            with open(target, "ab") as f:
                f.write(data[a:b])
        elif cmd == "close":
            held.close()
        print("ok", flush=True)
    """)


class Writer:
    """A real writer process for ``target``, writing the bytes of ``source``."""

    def __init__(self, target: Path, source: Path) -> None:
        self.size = source.stat().st_size
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(source)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def do(self, *command: object) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(" ".join(map(str, command)) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok", command

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def same_audio(a: Path, b: Path) -> bool:
    """Both files decode to the same samples (tags may differ)."""
    x, sr_x = sf.read(a, dtype="int16")
    y, sr_y = sf.read(b, dtype="int16")
    return sr_x == sr_y and x.shape == y.shape and bool((x == y).all())


# --------------------------------------------------------------------------- open writers


def test_idle_writer_holding_the_file_open_is_never_cut_off(tmp_path, models, sounds):
    """inotify: a writer that pauses far longer than any grace with the file open is waited
    for; the file is tagged whole once it closes."""
    music = tmp_path / "music"
    music.mkdir()
    source = sounds["low.wav"]
    target = music / "download.wav"
    clock = FakeClock()
    with daemon_thread(models, [music], tmp_path / "cache.db", clock=clock,
                       settle=1.0) as (daemon, cache), Writer(target, source) as writer:
        assert daemon.roots[0].kind == "native"
        half = writer.size // 2
        writer.do("open")
        writer.do("write", 0, half)
        wait_for(lambda: daemon.settler.quiet(str(target)) == 0.0, what="the write seen")
        assert writers(target).busy
        inode = target.stat().st_ino
        # Idle with the file open for twice the grace given to writers we cannot see.
        settle_passes(daemon, clock, 2 * OPEN_GRACE)
        assert total_jobs(cache) == 0 and str(target) in daemon.settler
        assert target.stat().st_ino == inode and target.stat().st_size == half  # untouched
        writer.do("write", half, writer.size)
        writer.do("close")
        advance_until(daemon, clock, lambda: daemon.stats["done"] == 1, 0.5,
                      "tagged after the close")
    assert read_tags(target).genres == ["Low"]
    assert same_audio(target, source)  # whole: not cut off at the first half


def test_unseen_writer_gets_a_long_open_grace(tmp_path):
    """Where /proc cannot show every process (here: a process whose fd folder cannot be
    read), "written, not closed" waits for the open grace, then is taken."""
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "fd").write_text("")  # not a folder: unreadable, as another user's
    song = tmp_path / "a.flac"
    song.write_bytes(b"x" * 100)
    assert not writers(song, proc=str(proc)).complete
    clock = FakeClock()
    settler = Settler(1.0, open_grace=600.0, clock=clock,
                      look=lambda p: writers(p, proc=str(proc)))
    settler.touch(str(song), writing=True)
    clock.advance(599.0)
    assert settler.due() == []
    clock.advance(1.0)
    assert settler.due() == [str(song)]
    settler.touch(str(song), writing=False)  # closed: the settle time is enough
    clock.advance(1.0)
    assert settler.due() == [str(song)]
    assert OPEN_GRACE >= 1800  # a paused download manager gets half an hour at least


# --------------------------------------------------------------------------- polling, network


def test_quiet_time_of_polled_and_network_roots():
    assert quiet_time(5.0, polled=False, poll_interval=10.0, network=False,
                      network_settle=60.0) == 5.0
    # Polled: a change shows one poll late, and its end one poll later still.
    assert quiet_time(5.0, polled=True, poll_interval=10.0, network=False,
                      network_settle=60.0) == 25.0
    assert quiet_time(5.0, polled=True, poll_interval=10.0, network=True,
                      network_settle=60.0) == 60.0
    assert quiet_time(5.0, polled=True, poll_interval=40.0, network=True,
                      network_settle=60.0) == 85.0
    settings = WatchSettings()
    assert settings.network_settle == 60.0 and settings.follow_links is False
    assert settings.quiet_time(polled=True, network=True) == 60.0
    with pytest.raises(ValueError, match="--network-settle must be >= 0"):
        WatchSettings(network_settle=-1.0)


def test_polling_does_not_tag_a_file_between_two_chunks(tmp_path, models, sounds):
    """Polling mode: chunks that come more than ``settle`` apart (but less than the polled
    quiet time) are one download, tagged once after the last."""
    music = tmp_path / "music"
    music.mkdir()
    source = sounds["low.wav"]
    target = music / "chunked.wav"
    clock = FakeClock()
    with daemon_thread(models, [music], tmp_path / "cache.db", clock=clock, settle=0.3,
                       poll=True, poll_interval=0.2) as (daemon, cache), \
            Writer(target, source) as writer:
        assert daemon.roots[0].kind == "polling"
        assert daemon.roots[0].quiet == pytest.approx(0.7)
        third = -(-writer.size // 3)
        for start in (0, third):
            writer.do("append", start, start + third)
            wait_for(lambda: daemon.settler.quiet(str(target)) == 0.0, what="the chunk seen")
            settle_passes(daemon, clock, 0.5)  # longer than settle, shorter than 0.7
            assert total_jobs(cache) == 0, "tagged between two chunks"
        writer.do("append", 2 * third, writer.size)
        wait_for(lambda: daemon.settler.quiet(str(target)) == 0.0, what="the last chunk seen")
        advance_until(daemon, clock, lambda: daemon.stats["done"] == 1, 0.3, "tagged")
        assert total_jobs(cache) == 1 and daemon.stats["analysed"] == 1
    assert read_tags(target).genres == ["Low"]
    assert same_audio(target, source)


def test_write_back_refused_while_open_is_not_a_failure(tmp_path, models, sounds):
    """A file queued by the catch-up scan while a writer holds it open: the write-back
    refuses (FileBusy); the daemon waits for the writer, counts no attempt, and tags the file
    from the cache once it is closed."""
    music = tmp_path / "music"
    music.mkdir()
    target = Path(shutil.copy(sounds["low.flac"], music / "held.flac"))
    os.utime(target, (target.stat().st_atime, target.stat().st_mtime - 3600))  # old: queued
    inode = target.stat().st_ino
    clock = FakeClock()
    with Writer(target, sounds["low.flac"]) as writer:
        writer.do("open")  # holds it open for writing, writes nothing
        with daemon_thread(models, [music], tmp_path / "cache.db", clock=clock, settle=0.3,
                           max_attempts=1) as (daemon, cache):
            wait_for(lambda: daemon.stats["deferred"] == 1, what="the write-back refused")
            assert daemon.stats["errors"] == 0 and not cache.failed_jobs()
            settle_passes(daemon, clock, 2 * OPEN_GRACE)  # still open: still waiting
            assert total_jobs(cache) == 1 and daemon.stats["done"] == 0
            assert target.stat().st_ino == inode and read_tags(target).genres == []
            writer.do("close")
            advance_until(daemon, clock, lambda: daemon.stats["done"] == 1, 0.5, "tagged")
            assert daemon.stats["errors"] == 0 and daemon.stats["cache"] == 1
    assert read_tags(target).genres == ["Low"]


# --------------------------------------------------------------------------- symlinks


def _skipped(caplog, name: str) -> bool:
    return any(f"/{name}: skipped, a link to" in m for m in caplog.messages)


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_links_out_of_the_watched_folder_are_not_followed(tmp_path, models, sounds, poll,
                                                          caplog):
    music = tmp_path / "music"
    music.mkdir()
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    victims = [Path(shutil.copy(sounds["low.flac"], outside / "song.flac")),
               Path(shutil.copy(sounds["high.mp3"], outside / "later.mp3")),
               Path(shutil.copy(sounds["low.wav"], outside / "dir" / "deep.wav"))]
    (music / "link.flac").symlink_to(victims[0])  # there at start: the catch-up scan
    (music / "ext").symlink_to(outside / "dir", target_is_directory=True)
    shutil.copy(sounds["low.wav"], music / "own.wav")
    caplog.set_level(logging.INFO, logger="tagger.watch.links")
    with daemon_thread(models, [music], tmp_path / "cache.db", settle=0.2, poll=poll,
                       poll_interval=0.2) as (daemon, cache):
        wait_for(lambda: daemon.stats["done"] == 1, what="own.wav tagged")
        wait_for(lambda: _skipped(caplog, "link.flac"), what="the scan skipped link.flac")
        (music / "later.mp3").symlink_to(victims[1])  # made while watched: an event
        wait_for(lambda: _skipped(caplog, "later.mp3"), what="the event skipped later.mp3")
        if poll:  # polling stats through folder links, so it sees files appear behind them
            victims.append(Path(shutil.copy(sounds["high.mp3"], outside / "dir" / "new.mp3")))
            wait_for(lambda: _skipped(caplog, "ext/new.mp3"), what="ext/new.mp3 skipped")
        wait_for(lambda: not daemon.scanning and cache.counts()["pending"] == 0
                 and cache.counts()["running"] == 0, what="scan and queue finished")
        assert done_paths(cache) == [str(music / "own.wav")]
    assert sum("link.flac: skipped" in m for m in caplog.messages) == 1  # once per link
    for victim in victims:
        assert read_tags(victim).genres == [], victim
    assert read_tags(music / "own.wav").genres == ["Low"]


def test_follow_links_tags_through_links(tmp_path, models, sounds):
    music = tmp_path / "music"
    music.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = Path(shutil.copy(sounds["low.flac"], outside / "song.flac"))
    (music / "link.flac").symlink_to(victim)
    with daemon_thread(models, [music], tmp_path / "cache.db", settle=0.2,
                       follow_links=True) as (daemon, cache):
        wait_for(lambda: daemon.stats["done"] == 1, what="tagged through the link")
    assert read_tags(victim).genres == ["Low"]


# --------------------------------------------------------------------------- the cache file


def test_cache_deleted_under_the_daemon_is_recreated(tmp_path, models, sounds, caplog):
    music = tmp_path / "music"
    music.mkdir()
    cache_path = tmp_path / "cache.db"
    caplog.set_level(logging.INFO, logger="tagger")
    with daemon_thread(models, [music], cache_path, settle=0.2) as (daemon, cache):
        first = Path(shutil.copy(sounds["low.flac"], music / "first.flac"))
        wait_for(lambda: daemon.stats["done"] == 1, what="first.flac tagged")
        cache_path.unlink()
        wait_for(lambda: any("scanning every watched folder again" in m
                             for m in caplog.messages), what="the deletion noticed")
        second = Path(shutil.copy(sounds["high.mp3"], music / "second.mp3"))
        # first.flac again (the rescan: the new cache does not know it), second.mp3 new.
        # Not "3 jobs done": second.mp3 may be done twice (its event, then the rescan)
        # before first.flac's turn comes.
        wait_for(lambda: _cached(cache_path, first, second), what="both in the new cache")
    assert read_tags(second).genres == ["High"]


def _cached(cache_path: Path, *paths: Path) -> bool:
    """Whether the cache file at ``cache_path`` holds a result for every one of ``paths``."""
    if not cache_path.exists():
        return False
    with Cache(cache_path) as fresh:
        return all(fresh.get(p) is not None for p in paths)


def test_silent_track_is_skipped_not_failed(tmp_path, models, sounds, caplog):
    """A silent track has nothing to tag: its job is done, no retry, no failure."""
    music = tmp_path / "music"
    music.mkdir()
    make_audio(music / "silence.flac", seconds=4.0, sr=16000, kind="silence")
    shutil.copy(sounds["low.flac"], music / "low.flac")
    caplog.set_level(logging.INFO, logger="tagger.watch")
    with daemon_thread(models, [music], tmp_path / "cache.db", settle=0.2,
                       max_attempts=3) as (d, cache):
        wait_for(lambda: d.stats["done"] == 1 and d.stats["skipped"] == 1, what="both seen")
        wait_for(lambda: cache.counts()["pending"] == 0 and cache.counts()["running"] == 0,
                 what="queue empty")
        assert d.stats["errors"] == 0 and d.stats["failed"] == 0
        assert cache.counts()["failed"] == 0
    assert any(r.getMessage() == f"skipped {music / 'silence.flac'}: silent"
               for r in caplog.records)


def test_a_file_name_cannot_forge_a_log_line(tmp_path, monkeypatch):
    """The service's log keeps one record per line whatever a file is called."""
    stream = io.StringIO()
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging(0, stream)
    try:
        logging.getLogger("tagger.watch.workers").info(
            "%s: done", "evil.mp3\n2026-01-01 00:00:00 INFO tagger.watch.workers: tagged /etc/passwd")
    finally:
        logging.getLogger().handlers[:] = []
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "evil.mp3\\n2026" in lines[0]
