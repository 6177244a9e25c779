"""``genreml tag`` over an unchanged, already tagged library, end to end through the CLI.

Writes ``--tracks`` real small audio files (a 2-s flac and a 2-s mp3, copied; half each),
fills the cache with the bundled models' result of the first file for every copy (analysing
10,000 files would take most of the hour and measure something else), lets ``genreml tag``
write the tags once, then times further runs of the same command in a fresh process each:
the re-run a user makes after adding nothing. Also times ``--print`` (which reads every
file's tags) for comparison. Prints seconds; asserts nothing.

    taskset -c 0,1 python bench/bench_rerun.py [--tracks 10000] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from audiogen import make_audio  # noqa: E402
from tagger.cache import Cache  # noqa: E402
from tagger.model import load_models  # noqa: E402
from tagger.predict import Analyzer  # noqa: E402


def build(root: Path, db: Path, n_tracks: int) -> None:
    """The files, and the cache holding a real result of the bundled models for each."""
    seeds = [make_audio(root / "seed.flac", seconds=2.0, freq=440.0),
             make_audio(root / "seed.mp3", seconds=2.0, sr=44100, freq=880.0)]
    results = [Analyzer(load_models(device="cpu")).analyze(p) for p in seeds]
    batch = []
    with Cache(db) as cache:
        for i in range(n_tracks):
            seed, result = seeds[i % 2], results[i % 2]
            path = root / "library" / f"artist{i // 100:03d}" / f"track{i:05d}{seed.suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(seed, path)
            batch.append((dataclasses.replace(result, path=str(path)), f"seed{i % 2}", None))
            if len(batch) == 1000:
                cache.store_many(batch)
                batch = []
        cache.store_many(batch)


def run(db: Path, library: Path, *extra: str) -> tuple[float, str]:
    """Seconds of one ``genreml tag`` process, and its last line."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tagger.cli", "tag", "--cache", str(db),
                           *extra, str(library)], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp one)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="genreml-rerun-"))
    db, library = root / "cache.db", root / "library"
    t0 = time.perf_counter()
    build(root, db, args.tracks)
    print(f"{args.tracks} files and their cached results: {time.perf_counter() - t0:.1f} s")
    seconds, line = run(db, library)
    print(f"first tag run (writes every file's tags): {seconds:.1f} s  [{line}]")
    times = []
    for _ in range(args.runs):
        seconds, line = run(db, library)
        times.append(seconds)
    print(f"re-run, unchanged library: {', '.join(f'{t:.2f}' for t in times)} s "
          f"(median {sorted(times)[len(times) // 2]:.2f} s)  [{line}]")
    seconds, _ = run(db, library, "--print")
    print(f"re-run with --print (reads every file's tags): {seconds:.2f} s")
    if args.dir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
