"""Files per second: ``genreml analyze`` locally vs ``--ray`` on this machine, and what bounds
the scaling per added node.

    PYTHONPATH=. python bench/bench_ray.py [--data ../shared/data/4q] [--files 120]

Protocol: the first ``--files`` clips of 4Q (sorted paths; real 30-s Opus clips) and the
bundled models. In one run, side by side:

1. ``genreml analyze --workers 2`` (local, no cache): wall time, files/s;
2. ``genreml analyze --ray --cache FRESH`` on a local Ray instance started by this script with
   2 CPUs (its start-up timed apart): wall time, files/s;
3. the stages measured one by one on a sample of the same files, on one core: decoding and
   features (:func:`tagger.patches.decode_track`, a Ray task's work), the backbone and heads
   (:meth:`tagger.predict.Analyzer.decide`, an actor's work), and the driver's share per file
   (:meth:`tagger.tagging.Tagger.tag` with the worker's result: the heads again, the cache
   write), which does not scale with the cluster.

Run by hand (never by the tests); needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "4q")
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--sample", type=int, default=20, help="files for the stage timings")
    args = parser.parse_args()
    files = sorted(args.data.glob("Q*/*.opus"))[: args.files]
    if not files:
        sys.exit(f"no 4Q clips under {args.data}")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from tagger.cli import main as genreml

    out = open(os.devnull, "w")
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    real_stdout = sys.stdout
    sys.stdout = out
    try:
        local, _ = _timed(genreml, ["-q", "analyze", "--workers", "2", *map(str, files)])
        import ray

        start_s, _ = _timed(lambda: ray.init(num_cpus=2, include_dashboard=False,
                                              log_to_driver=False))
        ray_s, _ = _timed(genreml, ["-q", "analyze", "--ray", "--cache", str(work / "c.db"),
                                    *map(str, files)])
        ray.shutdown()
    finally:
        sys.stdout = real_stdout
    stages = _stages(files[: args.sample], work)
    n = len(files)
    print(f"{n} 4Q clips (30 s Opus), bundled models, 2 cores\n")
    print("| run | wall s | files/s |\n|---|---|---|")
    print(f"| local `analyze --workers 2` | {local:.1f} | {n / local:.2f} |")
    print(f"| `analyze --ray` (local Ray, 2 CPUs; start-up {start_s:.1f} s apart) | "
          f"{ray_s:.1f} | {n / ray_s:.2f} |")
    print("\nPer file, one core, mean of", len(files[: args.sample]), "files:\n")
    print("| stage | where | ms per file |\n|---|---|---|")
    for name, where, value in stages:
        print(f"| {name} | {where} | {value * 1000:.1f} |")


def _stages(files: list[Path], work: Path) -> list[tuple[str, str, float]]:
    from threadpoolctl import threadpool_limits

    from tagger.cache import Cache
    from tagger.model import load_models
    from tagger.patches import decode_track
    from tagger.predict import Analyzer
    from tagger.tagging import Analysed, Tagger

    models = load_models(threads=1)
    analyzer = Analyzer(models)
    decode = infer = drive = 0.0
    with Cache(work / "stages.db") as cache, threadpool_limits(1):
        tagger = Tagger(models, cache, write=False)
        for path in files:
            t, track = _timed(decode_track, path, analyzer.grid)
            decode += t
            start = time.perf_counter()
            first = track.first
            more = track.more
            extra = (lambda: (more.starts, analyzer.embed_patches(more.mel))) if more else None
            result = analyzer.decide(str(path), track.duration, first.starts,
                                     analyzer.embed_patches(first.mel), extra)
            infer += time.perf_counter() - start
            st = track.stat
            done = Analysed(result, track.fingerprint, st.st_size, st.st_mtime_ns)
            t, _ = _timed(lambda: tagger.tag(path, analysed=done))
            drive += t
    k = len(files)
    return [("decode + features", "Ray task", decode / k),
            ("backbone + heads", "Ray actor", infer / k),
            ("heads again + cache write", "driver", drive / k)]


if __name__ == "__main__":
    main()
