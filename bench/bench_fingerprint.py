"""Cost of the content fingerprint: today's (segments across the track, exact length) against
the old one (the first 10 s decoded and resampled to 16 kHz), on 4-minute stereo mp3 and flac.

Run: ``python bench/bench_fingerprint.py`` (prints the median of 5 runs per file, in ms).
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from audiogen import make_audio  # noqa: E402
from tagger.audio import load  # noqa: E402
from tagger.fingerprint import fingerprint  # noqa: E402


def old_fingerprint(path: Path) -> str:
    """The fingerprint before version 2, for comparison."""
    y = load(path, 16000, max_seconds=10.0)
    pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype("<i2")
    return f"{hashlib.sha1(pcm.tobytes()).hexdigest()}:{len(pcm)}"


def median_ms(fn, path: Path, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for ext in ("mp3", "flac"):
            path = make_audio(Path(tmp) / f"four-minutes.{ext}", seconds=240.0, sr=44100,
                              channels=2, kind="noise")
            print(f"{ext}: old {median_ms(old_fingerprint, path):.1f} ms, "
                  f"new {median_ms(fingerprint, path):.1f} ms")


if __name__ == "__main__":
    main()
