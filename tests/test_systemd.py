"""The shipped systemd units: their sandbox holds (no network, a syscall filter, no
writable+executable memory), genreml still works inside it, and the system unit's /proc
setting leaves other users' writers knowable. (``systemd-analyze verify``: test_daemon.py.)

The sandbox is reproduced without a running systemd: the kernel's memory-deny-write-execute
(``PR_SET_MDWE``, what systemd 253+ uses for ``MemoryDenyWriteExecute=yes``) and strace
failing every system call outside the unit's ``SystemCallFilter=`` with EPERM, as
``SystemCallErrorNumber=EPERM`` does.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import onnx_models as om
from audiogen import make_audio
from tagger.tags import read_tags

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
UNITS = {"genreml.service": True, "genreml-system.service": False}  # unit -> user unit?
# systemd-analyze security --offline exposure (0-10) each unit must stay at or below.
EXPOSURE = {"genreml.service": 5.7, "genreml-system.service": 0.5}
# Always allowed with an allow-list filter (systemd.exec, SystemCallFilter=).
ALWAYS_ALLOWED = {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def settings(unit: str) -> list[tuple[str, str]]:
    """``(key, value)`` of every setting of ``unit``, in order."""
    out = []
    for line in (SYSTEMD / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


def values(unit: str, key: str) -> list[str]:
    return [v for k, v in settings(unit) if k == key]


def _env(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "run"
    runtime.mkdir(exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}


# --------------------------------------------------------------------------- the unit files


def test_user_unit_runs_the_configured_genreml():
    """No install location baked in: GENREML from the env file (default: PATH's genreml)."""
    unit = "genreml.service"
    assert values(unit, "ExecStart") == ["/usr/bin/env ${GENREML} watch $GENREML_WATCH_ARGS"]
    assert values(unit, "Environment") == ["GENREML=genreml"]
    # The env file comes after the default, so its GENREML wins.
    keys = [k for k, _ in settings(unit)]
    assert keys.index("EnvironmentFile") > keys.index("Environment")
    assert values(unit, "EnvironmentFile") == ["%h/.config/genreml/watch.env"]
    assert ".local/bin" not in "".join(v for _, v in settings(unit))
    example = (SYSTEMD / "watch.env.example").read_text()
    assert re.search(r"^#GENREML=/\S+/genreml$", example, re.M)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_sandbox_settings(unit):
    """No network, no W+X memory, private new files, a filter without @privileged and
    @resources (chown given back) in both units; the settings a user manager cannot apply
    are not in the user unit, where they would mislead (or stop it from starting)."""
    got = dict(settings(unit))
    for key, value in {"NoNewPrivileges": "yes", "PrivateNetwork": "yes",
                       "RestrictAddressFamilies": "AF_UNIX", "MemoryDenyWriteExecute": "yes",
                       "UMask": "0077", "SystemCallArchitectures": "native",
                       "SystemCallErrorNumber": "EPERM", "LockPersonality": "yes",
                       "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
                       "RestrictSUIDSGID": "yes"}.items():
        assert got.get(key) == value, (key, got.get(key))
    assert values(unit, "SystemCallFilter") == ["@system-service", "~@privileged @resources",
                                                "@chown"]
    text = (SYSTEMD / unit).read_text()
    assert "numba" not in text.lower() and "NUMBA" not in text
    if UNITS[unit]:
        for key in ("IPAddressDeny", "CapabilityBoundingSet", "ProtectSystem", "ProtectHome",
                    "PrivateTmp", "ProtectProc", "PrivateUsers"):
            assert key not in got, key
    else:
        assert got["IPAddressDeny"] == "any"
        assert got["ProtectProc"] not in ("invisible", "ptraceable")  # see the /proc test


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure(tmp_path, unit):
    """``systemd-analyze security`` does not get worse than the figures in README."""
    user = ["--user"] if UNITS[unit] else []
    proc = subprocess.run(["systemd-analyze", *user, "security", "--offline=yes",
                           f"--threshold={round(EXPOSURE[unit] * 10)}", unit],
                          capture_output=True, text=True, cwd=SYSTEMD, timeout=60,
                          env=_env(tmp_path))
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout)
    assert overall, proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{unit}: exposure {overall.group(1)} > {EXPOSURE[unit]}"


# --------------------------------------------------------------------------- genreml inside


def _expand(group: str) -> set[str]:
    """The system calls of a systemd syscall group (nested groups included)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    calls: set[str] = set()
    for word in (line.strip() for line in out.splitlines()):
        if not word or word.startswith("#") or word == group:
            continue
        calls |= _expand(word) if word.startswith("@") else {word}
    return calls


def allowed_syscalls(unit: str) -> set[str]:
    """What the unit's SystemCallFilter= lines allow, read as systemd does: the first line is
    an allow list, later ones add to it or (with ``~``) take from it."""
    lines = values(unit, "SystemCallFilter")
    assert lines and not lines[0].startswith("~")
    allowed = set(ALWAYS_ALLOWED)
    for line in lines:
        names = line.lstrip("~").split()
        calls = set().union(*(_expand(n) if n.startswith("@") else {n} for n in names))
        allowed = allowed - calls if line.startswith("~") else allowed | calls
    return allowed


@pytest.fixture(scope="module")
def mdwe() -> None:
    """The kernel can deny writable+executable memory to a process (Linux 6.3+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    # Required, not skipped: without it the units' MemoryDenyWriteExecute= goes unchecked.
    assert libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0, (
        f"this kernel has no PR_SET_MDWE ({os.uname().release}, needs Linux 6.3+): "
        "MemoryDenyWriteExecute= cannot be reproduced here")


def sandboxed(unit: str, trace: Path, argv: list[str]) -> list[str]:
    """``argv`` under ``unit``'s syscall filter and memory-deny-write-execute."""
    # strace only knows the calls of this architecture: "?" skips the others.
    denied = "!" + ",".join(f"?{name}" for name in sorted(allowed_syscalls(unit)))
    start = textwrap.dedent(f"""\
        import ctypes, os, sys
        if ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
            sys.exit("PR_SET_MDWE failed")
        os.execvp(sys.argv[1], sys.argv[1:])
        """)
    return [sys.executable, "-c", start, "strace", "-f", "-qq", "--seccomp-bpf",
            "-e", f"trace={denied}", "-e", f"inject={denied}:error=EPERM", "-o", str(trace),
            "--", *argv]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    om.band_model(folder / "band.onnx")
    return folder


def test_sandbox_is_real(tmp_path, mdwe):
    """The reproduction refuses what the unit refuses: W+X memory, a @resources call, and an
    internet socket (RestrictAddressFamilies= aside, socket() is allowed: the network is
    kept out by the checks in test_privacy.py)."""
    probe = textwrap.dedent("""\
        import mmap, os
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            print("wx allowed")
        except OSError:
            print("wx refused")
        try:
            os.sched_setaffinity(0, os.sched_getaffinity(0))
            print("affinity allowed")
        except PermissionError:
            print("affinity refused")
        """)
    proc = subprocess.run(sandboxed("genreml.service", tmp_path / "trace",
                                    [sys.executable, "-c", probe]),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split("\n")[:2] == ["wx refused", "affinity refused"], \
        proc.stdout + proc.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_genreml_works_inside_the_sandbox(tmp_path, unit, mdwe, models_dir):
    """`genreml tag` on every format (compressed ones decode through libsndfile and
    FFmpeg), and beets importing with the plugin, inside the unit's sandbox. A file of
    another group keeps it (the reason @chown stays allowed)."""
    music = tmp_path / "music"
    music.mkdir()
    for i, ext in enumerate(("mp3", "m4a", "opus", "ogg", "flac", "wav")):
        make_audio(music / f"s{i}.{ext}", seconds=2.0, sr=16000, freq=200.0)
    other_group = music / "s4.flac"
    if os.geteuid() == 0:
        os.chown(other_group, 0, 1)
    before = other_group.stat()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    trace = tmp_path / "tag.trace"
    proc = subprocess.run(sandboxed(unit, trace, [
        sys.executable, "-m", "tagger.cli", "tag", "--models", str(models_dir),
        "--cache", str(tmp_path / "cache.db"), str(music)]),
        capture_output=True, text=True, env=env, timeout=300)
    refused = sorted({line.split("(")[0].split()[-1]
                      for line in trace.read_text().splitlines() if "INJECTED" in line})
    assert proc.returncode == 0, f"refused: {refused}\n{proc.stderr}"
    for path in sorted(music.iterdir()):
        assert read_tags(path).genres == ["Low"], (path.name, refused, proc.stderr)
    after = other_group.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == \
        (before.st_uid, before.st_gid, before.st_mode)

    beetsdir = tmp_path / "beets"
    beetsdir.mkdir()
    (beetsdir / "config.yaml").write_text(textwrap.dedent(f"""\
        directory: {music}
        library: {beetsdir / 'library.db'}
        plugins: genreml
        genreml:
          models: {models_dir}
          device: cpu
        """))
    proc = subprocess.run(sandboxed(unit, tmp_path / "beet.trace", [
        sys.executable, "-m", "beets", "import", "-q", "-A", "-C", "-W",
        str(music / "s5.wav")]), capture_output=True, text=True,
        env={**env, "BEETSDIR": str(beetsdir)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(beetsdir / "library.db") as db:
        fields = dict(db.execute("SELECT key, value FROM item_attributes"))
    assert fields.get("genreml_mood") == "calm", fields


# --------------------------------------------------------------------------- /proc


HIDEPID = {"default": "", "noaccess": "hidepid=noaccess", "invisible": "hidepid=invisible",
           "ptraceable": "hidepid=ptraceable"}


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a procfs and switches users: root only")
def test_system_unit_proc_keeps_other_users_writers_knowable():
    """The system service runs as its own user. A download by another user that still holds
    a file open must not look like "nobody is writing": with the unit's ProtectProc= the
    open-writer check either sees the writer or says it cannot see everything."""
    mode = dict(settings("genreml-system.service")).get("ProtectProc", "default")
    # The file and the procfs where the service user can reach them (not in tmp_path, whose
    # parents are root's alone: a look that fails there would prove nothing).
    folder = Path(tempfile.mkdtemp(prefix="genreml-proc-"))
    folder.chmod(0o755)
    song = folder / "download.flac"
    song.write_bytes(b"partial")
    song.chmod(0o644)
    fd = os.open(song, os.O_WRONLY | os.O_APPEND)
    try:  # another user (daemon) holding it open for writing, idle between two chunks
        writer = subprocess.Popen(
            ["setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups", "sleep", "600"],
            pass_fds=(fd,))
    finally:
        os.close(fd)
    try:
        proc_dir = folder / "proc"
        proc_dir.mkdir()
        options = ["-o", HIDEPID[mode]] if HIDEPID[mode] else []
        look = ("from tagger.openfiles import writers; import sys; "
                "w = writers(sys.argv[1], proc=sys.argv[2]); print(w.busy, w.complete)")
        script = (f"mount -t proc {' '.join(options)} proc {proc_dir} && "
                  f"exec setpriv --reuid=nobody --regid=nogroup --clear-groups "
                  f"{sys.executable} -c '{look}' {song} {proc_dir}")
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                              text=True, timeout=60, env={**os.environ,
                                                          "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr
        busy, complete = (word == "True" for word in proc.stdout.split())
        assert busy or not complete, f"ProtectProc={mode}: a writer of another user is unseen"
    finally:
        writer.kill()
        writer.wait(10)
        shutil.rmtree(folder)
