"""First, do no harm (issue 12): ID3v1 left as it was, owner / group / mode / xattrs / ACLs
kept (by the rename, or by an in-place write after a backup), no write into a file that
changed or that another process is writing, clear lines for a FIFO or a truncated WAV/AIFF.

All on real files: real encoders, real xattrs and ACLs (``setfacl``), real child processes
(an unprivileged one forked with ``setresuid``, a writer holding a file open, one replacing
a file by rename mid-write, one SIGKILLed mid-write).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audiogen import make_audio
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TIT2, TPE1
from test_tags import BY_NAME, FORMATS, make_raw, seed_tags, snapshot, temp_files

from tagger.tags import (
    MODES,
    FileBusy,
    FileChanged,
    FileTags,
    TagError,
    cleanup_stale_temp,
    is_temp_file,
    read_tags,
    write_tags,
)
from tagger.tags.container import open_tagged
from tagger.tags.tempfiles import LockedFile

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to make files owned by others")
OTHER_UID, NOBODY = 1, 65534  # "daemon" owns the files; the service runs as "nobody"
XATTRS = {"user.comment": b"keep me", "user.rating": "★★★".encode()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``condition`` until it is true (returned) or the deadline passes (fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.001)
    pytest.fail(f"timed out waiting for {what or condition}")


# --- ID3v1 -----------------------------------------------------------------------------------


def _v1_mp3(folder: Path, v2: int | None) -> Path:
    """An mp3 with a v1 tag (non-ASCII Latin-1 text, track 5, genre number 17 "Rock") and,
    with ``v2``, a v2 tag whose title and artist differ from v1's."""
    path = make_raw(folder, BY_NAME["mp3-v24"])
    if v2:
        tags = ID3()
        tags.add(TIT2(encoding=1, text=["v2 Tïtle ♫"]))
        tags.add(TPE1(encoding=1, text=["Sigur Rós"]))
        tags.save(path, v1=0, v2_version=v2)

    def field(text: str, size: int) -> bytes:
        return text.encode("latin-1").ljust(size, b"\0")

    block = (b"TAG" + field("Café Olé", 30) + field("Björk", 30) + field("Homogénic", 30)
             + b"1997" + field("v1 ümlaut", 28) + b"\0\x05" + bytes([17]))
    assert len(block) == 128
    with open(path, "ab") as f:
        f.write(block)
    return path


def _v1_block(path: Path) -> bytes:
    return path.read_bytes()[-128:]


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("v2", [None, 3, 4], ids=["v1-only", "v1+v2.3", "v1+v2.4"])
def test_id3v1_is_left_byte_for_byte(v2: int | None, policy: str, tmp_path: Path) -> None:
    path = _v1_mp3(tmp_path, v2)
    block = _v1_block(path)
    assert block[:3] == b"TAG" and "Café".encode("latin-1") in block and block[-1] == 17
    frames = set(ID3(path, load_v1=False, translate=False).keys()) if v2 else set()

    plan = write_tags(path, ["Jazz", "Ambient"], "calm", policy)

    assert plan.changed
    assert _v1_block(path) == block
    tags = ID3(path, load_v1=False, translate=False)
    assert set(tags.keys()) - frames <= {"TCON", "TMOO", "TXXX:MOOD"}  # only ours appeared
    assert not tags.getall("COMM")
    if v2:
        assert tags["TIT2"].text == ["v2 Tïtle ♫"] and tags["TPE1"].text == ["Sigur Rós"]
    assert read_tags(path) == plan.after
    # The v1 genre (17, "Rock") counts as the file's genre where v2 has none.
    expected = {"fill": ["Rock"], "merge": ["Rock", "Jazz", "Ambient"],
                "force": ["Jazz", "Ambient"]}[policy]
    assert plan.after.genres == expected
    before = snapshot(path)
    assert not write_tags(path, ["Jazz", "Ambient"], "calm", policy).changed
    assert snapshot(path) == before


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_verification_covers_a_trailing_id3v1_block(fmt, tmp_path: Path) -> None:
    path = make_raw(tmp_path, fmt)
    seed_tags(path, fmt, ["Rock"], None)
    with open(path, "ab") as f:  # a v1 block some taggers append to any file
        f.write(b"TAG" + b"Song".ljust(30, b"\0") + b"\0" * 94 + bytes([17]))
    base = open_tagged(str(path)).others()
    data = bytearray(path.read_bytes())
    data[-125] = ord("X")  # the v1 title
    path.write_bytes(bytes(data))
    assert open_tagged(str(path)).others() != base


# --- messages --------------------------------------------------------------------------------


def test_fifo_is_not_a_regular_file_and_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "song.mp3"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def run() -> None:
        for call in (lambda: read_tags(fifo), lambda: write_tags(fifo, ["Rock"], "calm")):
            try:
                call()
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # opened: blocks until a writer comes; let it go
        with open(fifo, "wb"):
            pass
        pytest.fail("the FIFO was opened")
    assert [type(e) for e in outcome] == [TagError, TagError]
    assert all(e.reason == "not a regular file" for e in outcome)


@pytest.mark.parametrize("ext", ["wav", "aiff"])
@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_wav_aiff_cannot_be_decoded(ext: str, keep: float, tmp_path: Path) -> None:
    src = make_audio(tmp_path / f"full.{ext}", 2.0)
    path = tmp_path / f"cut.{ext}"
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    before = snapshot(path)
    for call in (lambda: read_tags(path), lambda: write_tags(path, ["Rock"], "calm")):
        with pytest.raises(TagError, match="truncated file, cannot be read or decoded") as err:
            call()
        assert "verification" not in err.value.reason and "\n" not in str(err.value)
    assert snapshot(path) == before
    assert [p.name for p in temp_files(tmp_path)] == []


# --- a file that changed or is being written -------------------------------------------------


def test_expected_identity_is_checked_at_the_start(tmp_path: Path) -> None:
    path = make_raw(tmp_path, BY_NAME["flac"])
    analysed = path.stat()
    new = tmp_path / "new.flac"
    shutil.copyfile(path, new)
    seed_tags(new, BY_NAME["flac"], [], "sad")
    os.replace(new, path)  # replaced by rename after the analysis
    before = snapshot(path)
    with pytest.raises(FileChanged, match="changed since it was analysed"):
        write_tags(path, ["Rock"], "calm", "force", expected=analysed)
    assert snapshot(path) == before
    assert write_tags(path, ["Rock"], "calm", "force", expected=path.stat()).changed


REPLACER = """
import os, sys, time
folder, target, other = sys.argv[1:]
print("ready", flush=True)
while not any(n.endswith(".tmp") for n in os.listdir(folder)):
    time.sleep(0.0005)
os.replace(other, target)
print("replaced", flush=True)
"""


def test_file_replaced_during_the_write_is_not_replaced(tmp_path: Path) -> None:
    """Another program replaces the file by rename while the copy is being tagged."""
    folder = tmp_path / "music"
    folder.mkdir()
    path = make_audio(folder / "song.flac", 120, 44100, 2, "noise")
    FLAC(path).save(padding=lambda info: 0)  # the copy's tag write moves all the audio
    other = tmp_path / "other.flac"
    shutil.copyfile(path, other)
    seed_tags(other, BY_NAME["flac"], [], "sad")
    replacement = sha(other)
    analysed = path.stat()
    proc = subprocess.Popen([sys.executable, "-c", REPLACER, str(folder), str(path), str(other)],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    try:
        with pytest.raises(FileChanged, match="changed"):
            write_tags(path, ["Rock"], "calm", expected=analysed)
    finally:
        assert proc.stdout.readline() == b"replaced\n"
        proc.wait(timeout=60)
    assert sha(path) == replacement  # the newcomer is untouched
    assert temp_files(folder) == []


HOLDER = """
import sys
with open(sys.argv[1], "ab") as f:
    print("open", flush=True)
    sys.stdin.readline()
"""


def test_file_open_for_writing_is_not_replaced(tmp_path: Path) -> None:
    path = make_raw(tmp_path, BY_NAME["mp3-v24"])
    before = snapshot(path)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
    try:
        with pytest.raises(FileBusy, match=f"still open for writing by pid {proc.pid}") as err:
            write_tags(path, ["Rock"], "calm")
        assert isinstance(err.value, TagError) and path.name in str(err.value)
    finally:
        proc.communicate(b"\n", timeout=60)
    assert snapshot(path) == before
    assert temp_files(tmp_path) == []
    write_tags(path, ["Rock"], "calm")  # the writer is gone
    assert read_tags(path) == FileTags(["Rock"], "calm")


# --- owner, group, mode, xattrs, ACLs --------------------------------------------------------


def acl(path: Path) -> str:
    return subprocess.run(["getfacl", "-cpn", str(path)], check=True, capture_output=True,
                          text=True).stdout


def meta(path: Path) -> tuple[Any, ...]:
    st = path.stat()
    attrs = {n: os.getxattr(path, n) for n in os.listxattr(path)}
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), attrs, acl(path)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A folder everyone may write in (the service user's library), reachable by nobody."""
    folder = Path(os.path.realpath("/tmp")) / f"genreml-test-{os.getpid()}-{time.time_ns()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def foreign_file(folder: Path, fmt_name: str = "flac", seconds: float = 1.0) -> Path:
    """A file of ``daemon:nogroup``, mode 664, with user xattrs and an ACL."""
    fmt = BY_NAME[fmt_name]
    path = make_audio(folder / f"song.{fmt.ext}", seconds, fmt.sr, 2, "chirp")
    seed_tags(path, fmt, [], None)
    os.chown(path, OTHER_UID, NOBODY)
    path.chmod(0o664)
    for name, value in XATTRS.items():
        os.setxattr(path, name, value)
    subprocess.run(["setfacl", "-m", f"u:{OTHER_UID}:rw,u:{NOBODY}:rw", str(path)], check=True)
    return path


def as_nobody(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a forked child as ``nobody:nogroup``; return its result or raise its
    exception here. (Forked, not exec'd: the interpreter lives where nobody may not read.)"""
    import tagger.openfiles  # noqa: F401 - imported before the privileges are gone

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            out: tuple[str, Any] = ("ok", call())
        except BaseException as e:  # noqa: BLE001 - handed to the parent
            out = ("err", e)
        with open(write, "wb") as f:
            pickle.dump(out, f)
        os._exit(0)
    os.close(write)
    with open(read, "rb") as f:
        kind, value = pickle.load(f)
    os.waitpid(pid, 0)
    if kind == "err":
        raise value
    return value


@needs_root
def test_root_run_keeps_owner_mode_xattrs_and_acl_by_rename(shared: Path) -> None:
    path = foreign_file(shared)
    before, inode = meta(path), path.stat().st_ino
    assert f"user:{OTHER_UID}:rw-" in before[4] and "system.posix_acl_access" in before[3]
    assert {k: v for k, v in before[3].items() if k.startswith("user.")} == XATTRS

    write_tags(path, ["Rock"], "calm")

    assert read_tags(path) == FileTags(["Rock"], "calm")
    assert path.stat().st_ino != inode  # replaced by a verified copy, atomically
    assert meta(path) == before
    assert temp_files(shared) == []


@needs_root
@pytest.mark.parametrize("fmt", ["flac", "mp3-v23", "m4a"])
def test_service_user_writes_in_place_keeping_owner_and_attributes(fmt: str,
                                                                   shared: Path) -> None:
    path = foreign_file(shared, fmt)
    before, inode = meta(path), path.stat().st_ino

    plan = as_nobody(lambda: write_tags(path, ["Rock", "Jazz"], "calm"))

    assert plan.after == FileTags(["Rock", "Jazz"], "calm")
    assert read_tags(path) == plan.after
    assert meta(path) == before  # still daemon:nogroup 664, xattrs and ACL
    assert path.stat().st_ino == inode
    assert temp_files(shared) == []
    snap = snapshot(path)
    assert not as_nobody(lambda: write_tags(path, ["Rock", "Jazz"], "calm")).changed
    assert snapshot(path) == snap


@needs_root
def test_safe_only_refuses_and_leaves_the_file_alone(shared: Path) -> None:
    path = foreign_file(shared)
    before, snap = meta(path), snapshot(path)

    with pytest.raises(TagError, match=r"cannot keep owner daemon:nogroup.*--safe-only") as err:
        as_nobody(lambda: write_tags(path, ["Rock"], "calm", safe_only=True))

    assert "running as uid 65534" in err.value.reason and "\n" not in str(err.value)
    assert snapshot(path) == snap and meta(path) == before
    assert temp_files(shared) == []


INPLACE_WRITER = """
import os, sys
from tagger.tags import write_tags
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
print("go", flush=True)
write_tags(sys.argv[1], ["Rock", "Jazz"], "calm", "force")
"""


@needs_root
def test_sigkill_during_an_in_place_write_is_restored_from_the_backup(
        shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = foreign_file(shared, "flac", seconds=120)
    FLAC(path).save(padding=lambda info: 0)  # the tag write has to move all the audio
    pristine, before, inode = sha(path), meta(path), path.stat().st_ino
    start = path.stat()

    # A forked child (the interpreter is not readable by nobody, so not exec'd).
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            write_tags(path, ["Rock", "Jazz"], "calm", "force")
        finally:
            os._exit(0)
    # Kill it once it has begun rewriting the original (its backup is there).
    wait_for(lambda: (s := path.stat()).st_size != start.st_size
             or s.st_mtime_ns != start.st_mtime_ns, what="the in-place write to begin")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    (backup,) = [p for p in shared.iterdir() if p != path]
    assert is_temp_file(backup) and backup.suffix == ".bak"
    assert sha(backup) == pristine

    with caplog.at_level(logging.INFO, logger="tagger.tags"):
        removed = cleanup_stale_temp(shared, min_age=0)

    assert removed == [backup]
    assert sha(path) == pristine and path.stat().st_ino == inode
    assert meta(path) == before
    assert list(shared.iterdir()) == [path]
    if any("restored" in r.getMessage() for r in caplog.records):
        assert any(str(path) in r.getMessage() and str(backup) in r.getMessage()
                   for r in caplog.records)


def dead_writers_backup(path: Path) -> Path:
    """A backup as an in-place writer makes it, left behind (its lock released) as when
    that writer dies."""
    backup = LockedFile(str(path), ".bak")
    backup.close()
    return Path(backup.path)


def test_backup_of_an_untouched_file_is_removed(tmp_path: Path) -> None:
    path = make_raw(tmp_path, BY_NAME["ogg"])
    backup = dead_writers_backup(path)
    before = snapshot(path)
    assert cleanup_stale_temp(tmp_path, min_age=0) == [backup]
    assert snapshot(path) == before and list(tmp_path.iterdir()) == [path]


def test_live_backup_is_left_alone(tmp_path: Path) -> None:
    path = make_raw(tmp_path, BY_NAME["ogg"])
    backup = LockedFile(str(path), ".bak")
    try:
        path.write_bytes(b"half written")
        assert cleanup_stale_temp(tmp_path, min_age=0) == []
        assert path.read_bytes() == b"half written"  # its writer is alive: not restored
    finally:
        backup.discard()


def test_backup_whose_file_is_gone_is_kept_and_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_raw(tmp_path, BY_NAME["ogg"])
    backup = dead_writers_backup(path)
    path.rename(tmp_path.parent / f"{tmp_path.name}-moved.ogg")  # moved away since
    with caplog.at_level(logging.ERROR, logger="tagger.tags"):
        assert cleanup_stale_temp(tmp_path, min_age=0) == []
    assert backup.exists()
    assert any(str(backup) in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)


def test_backup_of_a_long_name_finds_its_file_by_inode(tmp_path: Path) -> None:
    path = tmp_path / ("é" * 120 + ".ogg")  # the backup's name holds only a shortened hint
    shutil.copyfile(make_raw(tmp_path, BY_NAME["ogg"]), path)
    (tmp_path / "raw-ogg.ogg").unlink()
    pristine, inode = sha(path), path.stat().st_ino
    backup = dead_writers_backup(path)
    with open(path, "r+b") as f:  # an in-place write cut short
        f.seek(100)
        f.write(b"\0" * 500)
    assert cleanup_stale_temp(tmp_path, min_age=0) == [backup]
    assert sha(path) == pristine and path.stat().st_ino == inode
