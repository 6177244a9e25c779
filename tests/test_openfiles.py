"""tagger.openfiles: writers are found through /proc by inode, readers are not writers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tagger.openfiles import writers

HOLD = """
import sys, time
f = open(sys.argv[1], sys.argv[2])
print("open", flush=True)
sys.stdin.read()  # hold it open until the test closes our stdin
"""


def _holder(path, mode):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"  # waits until the file is open
    return proc


def _release(proc):
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.mark.parametrize("mode", ["ab", "r+b", "wb"])
def test_a_process_writing_the_file_is_found(tmp_path, mode):
    path = tmp_path / "song.mp3"
    path.write_bytes(b"x" * 100)
    proc = _holder(path, mode)
    try:
        seen = writers(path)
        assert proc.pid in seen.pids and seen.busy
    finally:
        _release(proc)
    assert proc.pid not in writers(path).pids


def test_a_reader_is_not_a_writer(tmp_path):
    path = tmp_path / "song.mp3"
    path.write_bytes(b"x" * 100)
    proc = _holder(path, "rb")
    try:
        assert proc.pid not in writers(path).pids
    finally:
        _release(proc)


def test_found_by_inode_after_a_rename(tmp_path):
    """A download renamed into place while its writer still has it open is still busy."""
    part = tmp_path / "song.mp3.part"
    part.write_bytes(b"x")
    proc = _holder(part, "ab")
    try:
        final = tmp_path / "song.mp3"
        os.rename(part, final)
        assert proc.pid in writers(final).pids
    finally:
        _release(proc)


def test_own_descriptors_count_only_when_asked(tmp_path):
    path = tmp_path / "a.flac"
    with open(path, "wb"):
        assert not writers(path).busy
        assert os.getpid() in writers(path, include_self=True).pids


def test_missing_file_and_missing_procfs(tmp_path):
    assert writers(tmp_path / "nothing").pids == ()
    path = tmp_path / "a.flac"
    path.write_bytes(b"x")
    seen = writers(path, proc=str(tmp_path / "no-proc"))
    assert not seen.complete and not seen.busy


def test_unreadable_processes_make_the_look_incomplete():
    """As an unprivileged user, root's processes cannot be inspected: the look says so."""
    # Required, not skipped: CI runs as root, and only root can become another user here.
    assert os.geteuid() == 0, "run the suite as root: this test drops to user nobody"
    folder = tempfile.mkdtemp()  # pytest's tmp_path is root-only; nobody must see the file
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "a.flac")
    with open(path, "wb") as f:
        f.write(b"x")
    os.chmod(path, 0o644)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, look, report through the pipe
        code = 1
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.write(write, str(writers(path).complete).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        _, status = os.waitpid(pid, 0)
        answer = os.read(read, 100).decode()
    finally:
        os.close(read)
        shutil.rmtree(folder)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == "False"
