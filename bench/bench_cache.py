"""How long a re-run over an unchanged, fully cached library takes (the cache's hot path).

Builds ``--tracks`` tiny dummy files (the cache never reads audio) and stores a synthetic
genre + emotion result for each, then times what ``genreml tag`` does on a second run:
stat every file and find its cached result, once with :meth:`Cache.lookup_many` (the fast
path) and once with one :meth:`Cache.lookup` per file. Prints seconds; asserts nothing.

    python bench/bench_cache.py [--tracks 10000] [--genre-labels 87] [--emotion-labels 8]
                                [--clips 60] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagger.cache import Cache  # noqa: E402
from tagger.result import HeadResult, ModelIdentity, TrackResult  # noqa: E402

MODELS = {
    "genre": ModelIdentity("genre-bench", "1.0", "a" * 64),
    "emotion": ModelIdentity("emotion-bench", "1.0", "b" * 64),
}


def _head(task: str, n_labels: int, n_clips: int, rng: np.random.Generator) -> HeadResult:
    timeline = rng.random((n_clips, n_labels), dtype=np.float32)
    return HeadResult(task, [f"{task}-{i}" for i in range(n_labels)], timeline.mean(axis=0),
                      timeline, 0.3, MODELS[task])


def build(root: Path, cache: Cache, n_tracks: int, n_labels: dict[str, int], n_clips: int
          ) -> list[str]:
    """Write the dummy files and their cached results; returns the paths."""
    rng = np.random.default_rng(0)
    paths, batch = [], []
    for i in range(n_tracks):
        path = root / f"artist{i // 100:03d}" / f"track{i:05d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 100)
        heads = {task: _head(task, n, n_clips, rng) for task, n in n_labels.items()}
        result = TrackResult(str(path), 180.0, np.arange(n_clips, dtype=np.float32) * 3.0, heads)
        batch.append((result, f"fp{i}", None))
        paths.append(str(path))
        if len(batch) == 1000:
            cache.store_many(batch)
            batch = []
    cache.store_many(batch)
    return paths


def timed(label: str, fn: Callable[[], int]) -> float:
    """Run ``fn`` and print its wall time and its CPU time (this process, user + system:
    the steadier figure on a machine shared with other work)."""
    start, cpu = time.perf_counter(), time.process_time()
    hits = fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{label}: {seconds:.2f} s wall, {cpu:.2f} s CPU ({hits} hits)")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=10_000)
    parser.add_argument("--genre-labels", type=int, default=87)
    parser.add_argument("--emotion-labels", type=int, default=8)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        labels = {"genre": args.genre_labels, "emotion": args.emotion_labels}
        start = time.perf_counter()
        with Cache(root / "cache.db") as cache:
            paths = build(root / "library", cache, args.tracks, labels, args.clips)
        print(f"build: {time.perf_counter() - start:.2f} s, "
              f"cache {os.path.getsize(root / 'cache.db') / 2**20:.1f} MiB")
        # A fresh process-like start: new engine, cold pool, warm OS page cache.
        with Cache(root / "cache.db") as cache:
            timed(f"re-run, lookup_many over {len(paths)} files",
                  lambda: len(cache.lookup_many(paths, MODELS)))
            timed(f"re-run, lookup per file over {len(paths)} files",
                  lambda: sum(cache.lookup(p, MODELS) is not None for p in paths))


if __name__ == "__main__":
    main()
