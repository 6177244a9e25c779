"""Crash safety: a writer SIGKILLed at any moment never leaves a broken file.

A child process tags a large FLAC file (no padding, so mutagen has to move the whole audio
stream in the copy). It is killed at spread-out moments from "just started" to "surely
done"; each time the file must be byte-identical either to the original or to the fully
tagged result, and anything else left in the folder must be a temporary copy named like
``tagger.tags.TEMP_GLOB`` (which :func:`cleanup_stale_temp` then removes).

Clean-up tells a dead writer's temporary copy from a live one's by the ``flock`` the writer
holds on it for as long as it lives, not by age: a live write is never disturbed, and what a
killed one left is removed on the next run however young it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audiogen import make_audio
from mutagen.flac import FLAC
from test_tags import BY_NAME, seed_tags

from tagger.tags import FileTags, cleanup_stale_temp, is_temp_file, read_tags

KILLS = 12
EXPECTED = FileTags(["Rock", "Jazz"], "calm")
CHILD = """
import sys
from tagger.tags import write_tags
print("go", flush=True)
write_tags(sys.argv[1], ["Rock", "Jazz"], "calm", "force")
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_writer(path: Path) -> subprocess.Popen[bytes]:
    """Start the child and return once its imports are done and the write begins."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
    return proc


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~50 MB of FLAC noise with tags (cover, replaygain, ...) and no padding."""
    path = make_audio(tmp_path_factory.mktemp("big") / "big.flac", 320, 44100, 2, "noise")
    seed_tags(path, BY_NAME["flac"], ["Pop"], "happy")
    f = FLAC(path)
    f.save(padding=lambda info: 0)
    assert path.stat().st_size > 40e6
    return path


def test_sigkill_never_leaves_a_broken_file(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "song.flac"
    original = sha(pristine)

    # Calibration: one uninterrupted write gives the duration and the tagged reference.
    shutil.copyfile(pristine, path)
    proc = start_writer(path)
    t0 = time.perf_counter()
    assert proc.wait(timeout=60) == 0
    duration = time.perf_counter() - t0
    tagged = sha(path)
    assert tagged != original
    assert read_tags(path) == EXPECTED
    np.testing.assert_array_equal(sf.read(path, dtype="int16")[0],
                                  sf.read(pristine, dtype="int16")[0])

    rng = np.random.default_rng(7)
    outcomes = []
    for i in range(KILLS):
        shutil.copyfile(pristine, path)
        delay = (i + rng.uniform()) / KILLS * 1.5 * duration  # from "at once" to "done"
        proc = start_writer(path)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=60)

        now = sha(path)
        assert now in (original, tagged), f"kill after {delay:.3f}s left a broken file"
        if now == tagged:
            assert read_tags(path) == EXPECTED
            assert sf.info(path).frames == sf.info(pristine).frames
        strays = [p for p in tmp_path.iterdir() if p != path]
        assert all(is_temp_file(p) for p in strays), strays
        assert sorted(cleanup_stale_temp(tmp_path, min_age=0)) == sorted(strays)
        outcomes.append(("tagged" if now == tagged else "original", bool(strays)))

    # The kills must have landed both mid-write and after it, or this test proved nothing.
    print(f"write took {duration:.3f}s; outcomes: {outcomes}")
    assert ("original", True) in outcomes, f"no kill landed mid-write: {outcomes}"
    assert ("tagged", False) in outcomes, f"no write finished: {outcomes}"


def wait_for_temp(folder: Path, timeout: float = 60.0) -> Path:
    """The writer's temporary copy once the copying into it has begun (polled with a
    deadline). Its writer locks it first, so from then on the lock is there; a younger
    one is what the minimum age in ``cleanup_stale_temp`` is for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if is_temp_file(p) and p.stat().st_size > 0:
                    return p
        time.sleep(0.0005)
    pytest.fail("no temporary copy appeared")


def test_cleanup_never_touches_a_live_writers_copy(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "song.flac"
    shutil.copyfile(pristine, path)
    proc = start_writer(path)
    temp = wait_for_temp(tmp_path)

    assert cleanup_stale_temp(tmp_path, min_age=0) == []  # locked: its writer is alive

    assert proc.wait(timeout=120) == 0  # and its write went through
    assert read_tags(path) == EXPECTED
    assert not temp.exists() and list(tmp_path.iterdir()) == [path]


def test_a_killed_writers_copy_is_removed_whatever_its_age(
        pristine: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "song.flac"
    shutil.copyfile(pristine, path)
    original = sha(path)
    proc = start_writer(path)
    temp = wait_for_temp(tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    assert temp.exists()
    ten_seconds_ago = time.time() - 10  # past the few seconds between mkstemp and flock
    os.utime(temp, (ten_seconds_ago, ten_seconds_ago))

    with caplog.at_level(logging.INFO, logger="tagger.tags"):
        assert cleanup_stale_temp(tmp_path) == [temp]  # the default minimum age

    assert any(str(temp) in r.getMessage() for r in caplog.records)
    assert list(tmp_path.iterdir()) == [path] and sha(path) == original
