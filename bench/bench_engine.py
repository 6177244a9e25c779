"""The embedding-first engine's figures (issue 15), on real full-length recordings.

Run by hand, pinned to 2 cores like CI::

    taskset -c 0,1 python bench/bench_engine.py SOUNDTRACKS [--per-soundtrack 4]
        [--long-minutes 120] [--reheads 10000]

1. Side by side in one run, on the same tracks (``--per-soundtrack`` from each folder that
   ``bench/soundtracks.py`` made): a fresh ``genreml analyze --json`` process with the bundled
   models and default settings over all of them, then musicnn's own TensorFlow tagger (the
   ``musicnn`` package's ``extractor`` with its MSD checkpoint; TF and tf-keras from the
   ``train`` extra, run with ``TF_USE_LEGACY_KERAS=1`` as its TF1 layers need) over the same
   files in a fresh process. Wall times include interpreter start, imports and model loading
   for both. Prints each one's real-time factor and the ratio.
2. Peak memory (VmHWM) and time of ``genreml analyze`` on a generated ``--long-minutes`` FLAC.
3. Re-heading: ``--reheads`` files (dummy bytes: no audio is ever read) whose cache holds
   clip embeddings of the bundled backbone and results of an older head; then
   ``genreml tag --stale-only --no-write`` applies the bundled heads to all of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

AUDIO = {".ogg", ".opus", ".mp3", ".flac", ".wav", ".m4a"}
MUSICNN = """
import os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from musicnn.extractor import extractor
for path in sys.argv[1:]:
    taggram, tags, features = extractor(path, model="MSD_musicnn", extract_features=True)
    print(path, taggram.shape[0], flush=True)
"""


def tracks(root: Path, per_soundtrack: int) -> list[Path]:
    """The first ``per_soundtrack`` tracks of every soundtrack folder, by name."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and "-" in p.name):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO
                       and "silence" not in p.name)
        out += files[:per_soundtrack]
    return out


def seconds_of(paths: list[Path]) -> float:
    import soundfile as sf

    return sum(sf.info(str(p)).duration for p in paths)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start, proc.stdout


def side_by_side(paths: list[Path]) -> None:
    audio = seconds_of(paths)
    ours, out = timed([sys.executable, "-m", "tagger.cli", "analyze", "--json", "--device", "cpu",
                       *map(str, paths)])
    clips = [json.loads(line)["clips"] for line in out.splitlines()]
    theirs, _ = timed([sys.executable, "-c", MUSICNN, *map(str, paths)])
    print(f"{len(paths)} tracks, {audio / 60:.1f} min of audio")
    print("| tagger | wall time | real-time factor | clips per track |")
    print("|---|---|---|---|")
    print(f"| genreml analyze (bundled, --clips auto) | {ours:.1f} s | {audio / ours:.0f}x "
          f"| {np.mean(clips):.1f} |")
    print(f"| musicnn extractor (TensorFlow) | {theirs:.1f} s | {audio / theirs:.0f}x "
          f"| every 3 s |")
    print(f"genreml is {theirs / ours:.1f}x faster")


def long_file(tmp: Path, minutes: float) -> None:
    from bench_pipeline import write_long_flac

    path = write_long_flac(tmp / "long.flac", minutes * 60)
    code = ("import sys, time\n"
            "from tagger.model import load_models; from tagger.predict import Analyzer\n"
            "a = Analyzer(load_models(device='cpu'))\n"
            "t = time.perf_counter(); r = a.analyze(sys.argv[1])\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print(time.perf_counter() - t, int(hwm.split()[1]) / 1024, r.clips)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    seconds, mb, clips = out.split()
    print(f"{minutes:.0f}-minute FLAC (44.1 kHz stereo): peak RSS {float(mb):.0f} MB, "
          f"{float(seconds):.2f} s for {clips} clips")


def reheads(tmp: Path, n: int) -> None:
    from tagger.cache import Cache
    from tagger.model import load_models
    from tagger.result import ClipEmbeddings, ModelIdentity

    models = load_models(device="cpu")
    rng = np.random.default_rng(0)
    dim = models.backbone.embedding.dim
    clips = rng.normal(0, 1, (17, dim)).astype(np.float16)  # the auto budget's mean: 17
    from tagger.predict import track_result

    template = track_result(models, "x", 300.0, np.arange(17) * 3.0,
                            ClipEmbeddings(models.backbone.identity.sha256, clips))
    old = {t: ModelIdentity(i.name, "old", "0" * 64) for t, i in models.identities.items()}
    for task, head in template.heads.items():
        head.model = old[task]  # results of a previous head version
    db = tmp / "rehead.db"
    with Cache(db) as cache:
        batch = []
        for i in range(n):
            path = tmp / "library" / f"{i // 100:03d}" / f"{i:05d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not audio: a re-heading never reads it")
            batch.append((dataclasses.replace(template, path=str(path)), None, None))
            if len(batch) == 1000:
                cache.store_many(batch)
                batch = []
        cache.store_many(batch)
    seconds, out = timed([sys.executable, "-m", "tagger.cli", "tag", "--stale-only",
                          "--no-write", "--cache", str(db), str(tmp / "library")])
    print(f"re-heading {n} cached tracks (17 clips each) with the bundled heads through "
          f"`genreml tag --stale-only --no-write`: {seconds:.1f} s  [{out.strip()}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("soundtracks", type=Path, help="folder made by bench/soundtracks.py")
    ap.add_argument("--per-soundtrack", type=int, default=4)
    ap.add_argument("--long-minutes", type=float, default=120.0)
    ap.add_argument("--reheads", type=int, default=10000)
    ap.add_argument("--skip", nargs="*", default=(), choices=("side", "long", "rehead"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="genreml-engine-"))
    print(f"cores: {len(os.sched_getaffinity(0))}")
    if "side" not in args.skip:
        side_by_side(tracks(args.soundtracks, args.per_soundtrack))
    if "long" not in args.skip:
        long_file(tmp, args.long_minutes)
    if "rehead" not in args.skip:
        reheads(tmp, args.reheads)


if __name__ == "__main__":
    main()
