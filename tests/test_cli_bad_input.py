"""Bad input to the CLI gets one clear line, never a traceback: broken caches, hostile file
names, FIFOs, closed pipes, silent tracks, a missing plot extra. Real files, real caches,
real processes where the behaviour is the process's (exit status, pipes)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from audiogen import make_audio
from cli_library import make_library, tag
from tagger.cli import main
from tagger.tags import read_tags

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def lib(tmp_path):
    return make_library(tmp_path, m4a=False)



def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tagger.cli", *map(str, args)],
                          capture_output=True, timeout=240, **kw)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("genreml: ") and "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- broken caches


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database, just text\n" * 200)


def _truncated(path: Path) -> None:
    with sqlite3.connect(path) as db:  # a real cache, cut short
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),)] * 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _folder(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("breaker", [_garbage, _truncated, _folder])
@pytest.mark.parametrize("command", ["tag", "status", "show", "playlist"])
def test_a_broken_cache_is_one_line_naming_it_exit_2(lib, tmp_path, breaker, command):
    music, models, cache = lib
    breaker(cache)
    argv = {"tag": ["tag", "--models", models, "--cache", cache, music],
            "status": ["status", "--cache", cache],
            "show": ["show", "--cache", cache, music / "low.flac"],
            "playlist": ["playlist", "--cache", cache, "--mood", "calm"]}[command]
    proc = run(*argv, text=True)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert str(cache) in line


def run_on_read_only(folder: Path, *args):
    """The CLI with ``folder`` mounted read-only (a private mount namespace): a cache that
    cannot be written, whoever runs it (root ignores file modes)."""
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), sys.executable,
                           "-m", "tagger.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=240)


def _can_mount_read_only() -> bool:
    return subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro / /'],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not shutil.which("unshare") or not _can_mount_read_only(),
                    reason="needs unshare -m and a bind mount (root or user namespaces)")
def test_read_only_commands_work_on_a_cache_they_cannot_write(lib, capsys, tmp_path):
    music, models, cache = lib
    assert tag(capsys, music, models, cache)[0] == 0
    for argv in (["status", "--cache", cache],
                 ["show", "--cache", cache, music / "low.flac"],
                 ["playlist", "--cache", cache, "--mood", "calm", "--min-prob", "0"]):
        proc = run_on_read_only(cache.parent, *argv)
        assert proc.returncode == 0, (argv[0], proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = run_on_read_only(cache.parent, "tag", "--models", models, "--cache", cache, music)
    assert proc.returncode == 2
    assert str(cache) in one_line(proc.stderr)


# --------------------------------------------------------------------------- playlists


def test_a_file_name_with_a_line_break_cannot_inject_playlist_entries(lib, capsys, caplog,
                                                                      tmp_path):
    music, models, cache = lib
    evil = music / "calm.flac\n#EXTINF:1,injected\nevil.flac"
    shutil.copy(music / "low.flac", evil)
    shutil.copy(music / "low.flac", music / "ok\x1b[2J.flac")  # no line break: kept, escaped
    rc, out, err = tag(capsys, music, models, cache)
    assert rc == 0
    assert "\x1b" not in err and "injected\n" not in err  # printed names are escaped
    target = tmp_path / "calm.m3u"
    rc = main(["playlist", "--cache", str(cache), "--mood", "calm", "-o", str(target)])
    err = capsys.readouterr().err
    assert rc == 0
    lines = target.read_text(encoding="utf-8").splitlines()
    assert "evil.flac" not in lines and "#EXTINF:1,injected" not in lines
    paths = [line for line in lines if not line.startswith("#")]
    assert sorted(os.path.basename(p) for p in paths) == ["low.flac", "ok\x1b[2J.flac"]
    assert len(lines) == 1 + 2 * len(paths)
    warning = [r.getMessage() for r in caplog.records if "line break" in r.getMessage()]
    assert len(warning) == 1 and "calm.flac\\n#EXTINF:1,injected\\nevil.flac" in warning[0]


def test_a_cached_path_that_became_a_fifo_does_not_hang_the_playlist(lib, capsys, caplog,
                                                                     tmp_path):
    music, models, cache = lib
    tag(capsys, music, models, cache)
    (music / "low.flac").unlink()
    os.mkfifo(music / "low.flac")
    result: dict[str, object] = {}

    def playlist() -> None:
        result["rc"] = main(["playlist", "--cache", str(cache), "--mood", "calm",
                             "--min-prob", "0"])

    worker = threading.Thread(target=playlist, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(music / "low.flac", "wb"):
            pass
        pytest.fail("playlist blocked on a FIFO")
    out = capsys.readouterr().out
    assert [os.path.basename(p) for p in out.splitlines() if not p.startswith("#")] == [
        "high.mp3"]
    assert "low.flac: not a regular file" in caplog.text


def test_playlist_labels_match_whatever_the_case_and_unknown_ones_are_listed(lib, capsys):
    music, models, cache = lib
    tag(capsys, music, models, cache)
    rc = main(["playlist", "--cache", str(cache), "--mood", "CALM", "--genre", "low"])
    out = capsys.readouterr().out
    assert rc == 0
    assert [os.path.basename(p) for p in out.splitlines() if not p.startswith("#")] == [
        "low.flac"]
    rc = main(["playlist", "--cache", str(cache), "--mood", "sleepy"])
    err = capsys.readouterr().err
    assert rc == 2
    assert one_line(err).endswith("unknown mood 'sleepy'; known: calm, tense")
    rc = main(["playlist", "--cache", str(cache), "--mood", "calm", "--genre", "Jazz"])
    assert rc == 2 and "known: High, Low, Mid" in capsys.readouterr().err


# --------------------------------------------------------------------------- pipes, silence, plot


def _failed_jobs(cache: Path, n: int) -> None:
    from tagger.cache import Cache

    with Cache(cache) as c:
        for i in range(n):
            c.enqueue(f"/music/gone-{i:05d}.flac")
            job = c.claim()
            c.fail(job.id, "no such file", max_attempts=1)


@pytest.mark.parametrize("command", ["status", "analyze"])
def test_a_closed_pipe_ends_quietly_with_141(lib, capsys, tmp_path, command):
    music, models, cache = lib
    for i in range(6):  # more results than `head -1` reads
        shutil.copy(music / "low.flac", music / f"copy{i}.flac")
    tag(capsys, music, models, cache)
    _failed_jobs(cache, 1500)  # more status than a pipe buffer holds
    argv = {"status": ["status", "--cache", cache, "--limit", "5000"],
            "analyze": ["analyze", "--models", models, music]}[command]
    script = (f"{sys.executable} -m tagger.cli "
              + " ".join(f"'{a}'" for a in map(str, argv))
              + "; echo \"rc=$?\" >&2")
    proc = subprocess.run(["bash", "-c", f"({script}) | head -1"], capture_output=True,
                          text=True, timeout=240)
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert "rc=141" in proc.stderr


def test_a_silent_track_is_skipped_not_failed_now_and_later(lib, capsys):
    music, models, cache = lib
    make_audio(music / "silence.wav", seconds=4.0, kind="silence")
    for _ in range(2):  # and the next run too
        rc, out, err = tag(capsys, music, models, cache)
        assert rc == 0, err
        assert "silence.wav: skipped: silent" in err
        last = out.strip().splitlines()[-1]
        assert last.endswith("skipped 1, failed 0")
    proc = run("analyze", "--models", models, music, text=True)
    assert proc.returncode == 0 and "silence.wav: skipped: silent" in proc.stderr


def test_plot_without_matplotlib_names_the_extra(lib, capsys, tmp_path):
    music, models, cache = lib
    tag(capsys, music, models, cache)
    blocker = tmp_path / "block"
    blocker.mkdir()
    # matplotlib as if not installed: Python's documented way to block an import
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = run("show", "--cache", cache, music / "low.flac", "--plot", tmp_path / "t.png",
               text=True, env=env)
    assert proc.returncode == 2
    assert "'plot' extra" in one_line(proc.stderr)
    assert not (tmp_path / "t.png").exists()


def test_file_names_that_are_not_utf8_are_analysed_tagged_and_printed(tmp_path, capsys):
    """Names as old Latin-1 rips and Windows shares have them: bytes that are not UTF-8, on
    both decoders (libsndfile: flac, mp3; FFmpeg: m4a)."""
    music, models, cache = make_library(tmp_path)
    folder = os.fsencode(music)
    for name in (b"low.flac", b"high.mp3", b"mid.m4a"):
        stem, ext = name.split(b".")
        os.rename(os.path.join(folder, name), os.path.join(folder, stem + b"-caf\xe9\xff." + ext))
    rc, out, err = tag(capsys, music, models, cache, "--print")
    assert rc == 0, err
    assert "tagged 3" in out.splitlines()[-1] and "failed 0" in out.splitlines()[-1]
    assert out.count("caf\\xe9\\xff") == 3  # printed escaped, on one line each
    for name in os.listdir(folder):
        assert read_tags(os.fsdecode(os.path.join(folder, name))).genres, name
    rc, out, err = tag(capsys, music, models, cache)
    assert rc == 0 and "unchanged 3" in out and "cached 3" in out
