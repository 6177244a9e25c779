"""Nothing leaves the machine: every front door (``genreml analyze``, ``tag``, ``watch``, the
beets plugin, the trainer) runs with onnxruntime's telemetry off, opens no internet socket,
looks up no name and leaves no ``~/.cache/Microsoft`` behind.

The commands run as real processes under ``strace -f`` (every thread, onnxruntime's own
included), with HOME and the XDG folders in a temporary folder and ``ORT_DISABLE_TELEMETRY=0``
inherited from the environment (which switches telemetry on if genreml does not override it).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import onnx_models as om
from audiogen import make_audio
from tagger.tags import read_tags

REPO = Path(__file__).resolve().parents[1]
# Syscalls that open a connection or send a datagram; a DNS lookup needs one of them.
TRACED = "socket,connect,sendto,sendmsg,sendmmsg"
# What a connection attempt or a name lookup leaves in strace's output: an internet socket or
# address, or the socket of a local resolver (nscd, systemd-resolved).
OUTBOUND = re.compile(r"\bAF_INET6?\b|nscd|/resolve/|io\.systemd\.Resolve")
# onnxruntime's uploader looked up its events host 9-10 s after the first session was created
# (idle 2-core machine, telemetry on); the daemon is watched for twice that after its first file.
TELEMETRY_WINDOW = 20.0
# Entry points, and the modules that import onnxruntime (trainer.musicnn through trainer.export).
ENTRY_MODULES = ("tagger.cli", "tagger.watch", "tagger.model", "beetsplug.genreml",
                 "trainer.cli", "trainer.export", "trainer.features_cache", "trainer.musicnn")


@pytest.fixture(scope="module")
def strace() -> str:
    """strace, checked to be able to trace a child here (ptrace may be forbidden)."""
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", os.devnull,
                           "true"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"strace cannot trace processes here: {proc.stderr.strip()}"
    return "strace"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    om.band_model(folder / "band.onnx")
    return folder


@pytest.fixture
def private_env(tmp_path) -> dict[str, str]:
    """The environment of a user whose home and XDG folders are under ``tmp_path/home``."""
    home = tmp_path / "home"
    xdg = {"XDG_CACHE_HOME": home / ".cache", "XDG_CONFIG_HOME": home / ".config",
           "XDG_DATA_HOME": home / ".local" / "share", "XDG_STATE_HOME": home / ".local" / "state"}
    for folder in (home, *xdg.values()):
        folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "BEETSDIR")}
    env.update({k: str(v) for k, v in xdg.items()})
    # PYTHONPATH: the code under test, not whatever the venv's editable install points at.
    env.update(HOME=str(home), PYTHONPATH=str(REPO), ORT_DISABLE_TELEMETRY="0")
    return env


def traced(strace: str, trace: Path, argv: list[str]) -> list[str]:
    """``argv`` run by strace, following every thread, writing the traced calls to ``trace``."""
    return [strace, "-f", "-qq", "--seccomp-bpf", "-e", f"trace={TRACED}", "-o", str(trace),
            "--", *argv]


def outbound(trace: Path) -> list[str]:
    """Traced calls that reach for the network or a name resolver."""
    if not trace.exists():  # strace has not started the command yet
        return []
    return [line for line in trace.read_text(errors="replace").splitlines()
            if OUTBOUND.search(line)]


def assert_nothing_left(trace: Path, home: Path) -> None:
    assert not outbound(trace), "\n".join(outbound(trace)[:10])
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*") if "Microsoft" in p.parts)
    assert not left, f"onnxruntime telemetry files: {left}"


def song_in(folder: Path) -> Path:
    """A 200 Hz tone (Low, calm for the band model) in a new ``folder``."""
    folder.mkdir()
    return make_audio(folder / "song.flac", seconds=4.0, sr=16000, freq=200.0)


def genreml(*args: object) -> list[str]:
    return [sys.executable, "-m", "tagger.cli", *map(str, args)]


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_telemetry_is_off_before_onnxruntime_is_imported(module, private_env):
    """Whichever front door imports onnxruntime first, the variable is already 1 by then (the
    library reads it once, at import; 0 from the environment is overridden)."""
    code = textwrap.dedent("""\
        import importlib, os, sys
        seen = []
        def hook(event, args):
            if event == "import" and args[0] == "onnxruntime" and not seen:
                seen.append(os.environ.get("ORT_DISABLE_TELEMETRY"))
        sys.addaudithook(hook)
        importlib.import_module(sys.argv[1])
        import onnxruntime  # for the modules that import it only when they need it
        print(seen[0])
        """)
    proc = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True,
                          env=private_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1", f"{module}: ORT_DISABLE_TELEMETRY={proc.stdout.strip()}"


def test_analyze_and_tag_send_nothing(tmp_path, strace, models_dir, private_env):
    song = song_in(tmp_path / "music")
    home = Path(private_env["HOME"])
    for command in (["analyze", "--models", models_dir, song],
                    ["tag", "--models", models_dir, "--cache", tmp_path / "cache.db", song]):
        trace = tmp_path / f"{command[0]}.trace"
        proc = subprocess.run(traced(strace, trace, genreml(*command)), capture_output=True,
                              text=True, env=private_env, cwd=tmp_path, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert trace.exists()  # strace did trace it
        assert_nothing_left(trace, home)
    assert read_tags(song).genres == ["Low"]  # tag did run, and wrote


def test_learn_sends_nothing(tmp_path, strace, models_dir, private_env):
    """scikit-learn and skl2onnx too: learning, exporting and the report stay local."""
    from learn_library import make_learn_library

    make_learn_library(tmp_path / "music", artists=3, per_artist=2, tagged_artists=3)
    home = Path(private_env["HOME"])
    trace = tmp_path / "learn.trace"
    proc = subprocess.run(traced(strace, trace, genreml(
        "learn", "--models", models_dir, "--min-tracks", 4, tmp_path / "music")),
        capture_output=True, text=True, env=private_env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_nothing_left(trace, home)
    personal = Path(private_env["XDG_DATA_HOME"]) / "genreml" / "personal"
    assert (personal / "personal-genre.onnx").exists()  # learn did run


def _child(pid: int, program: str, timeout: float = 30.0) -> int:
    """The process strace (``pid``) started, running ``program`` (strace also forks
    short-lived copies of itself to probe the kernel)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children.read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_text().split("\0")
            except OSError:  # it ended meanwhile
                continue
            if argv[0] == program:
                return int(child)
        time.sleep(0.05)
    raise AssertionError(f"strace started no {program} process")


def _tagged(path: Path) -> bool:
    try:
        return bool(read_tags(path).genres)
    except Exception:  # caught between the daemon's write and rename: try again
        return False


def _beets(folder: Path, music: Path, models_dir: Path) -> Path:
    """A beets config (BEETSDIR) with the genreml plugin, analysing on import."""
    folder.mkdir()
    (folder / "config.yaml").write_text(textwrap.dedent(f"""\
        directory: {music}
        library: {folder / 'library.db'}
        plugins: genreml
        genreml:
          models: {models_dir}
          device: cpu
        """))
    return folder


def test_beets_plugin_and_watch_daemon_send_nothing(tmp_path, strace, models_dir,
                                                    private_env):
    """beets (which imports requests) imports a file with the genreml plugin, without the
    autotagger (-A); then the daemon, with --beets, tags it and stays up well past the moment
    onnxruntime's telemetry looked up its host from the worker threads; SIGTERM stops it."""
    music = tmp_path / "music"
    song = song_in(music)
    beetsdir = _beets(tmp_path / "beets", music, models_dir)
    env = {**private_env, "BEETSDIR": str(beetsdir)}
    home = Path(private_env["HOME"])

    trace = tmp_path / "beet.trace"
    proc = subprocess.run(
        traced(strace, trace, [sys.executable, "-m", "beets", "import", "-q", "-A", "-C", "-W",
                               str(song)]),
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(beetsdir / "library.db") as db:
        fields = dict(db.execute("SELECT key, value FROM item_attributes"))
    assert fields.get("genreml_mood") == "calm", fields  # the plugin did analyse
    assert_nothing_left(trace, home)
    assert read_tags(song).genres == []  # -W: beets wrote nothing; the daemon will

    trace = tmp_path / "watch.trace"
    log_path = tmp_path / "watch.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            traced(strace, trace, genreml("watch", "--settle", "0.5", "--beets", "--models",
                                          models_dir, "--cache", tmp_path / "cache.db",
                                          music)),
            stdout=log, stderr=log, env=env, cwd=tmp_path)
    try:
        daemon = _child(proc.pid, sys.executable)
        deadline = time.monotonic() + 120
        while not _tagged(song):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the daemon did not tag the file in 120 s"
            time.sleep(0.1)
        # An absence is checked over a window: fail as soon as anything reaches out.
        window = time.monotonic() + TELEMETRY_WINDOW
        while time.monotonic() < window:
            assert not outbound(trace), "\n".join(outbound(trace)[:10])
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        os.kill(daemon, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert_nothing_left(trace, home)
    assert "Traceback" not in log_path.read_text()


def test_warns_when_onnxruntime_came_first(tmp_path, models_dir, private_env):
    """A host that imported onnxruntime, telemetry on, before genreml: said once, not hidden."""
    code = textwrap.dedent(f"""\
        import logging
        import onnxruntime
        logging.basicConfig(format="%(levelname)s %(message)s")
        from tagger.model import load_models
        load_models({str(models_dir)!r}, device="cpu")
        load_models({str(models_dir)!r}, device="cpu")
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=private_env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "ORT_DISABLE_TELEMETRY=1" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING onnxruntime was imported before"), \
        proc.stderr
