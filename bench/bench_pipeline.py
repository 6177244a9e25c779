"""Seconds per 4-minute track by stage, real-time factor, and peak memory on a 2-hour file.

Run by hand (not in CI), pinned to 2 cores like the CI machine::

    taskset -c 0,1 python bench/bench_pipeline.py [--model FOLDER] [--audio FILE ...]

Without ``--model`` it uses the bundled models if any; ``--model musicnn-sized`` builds a model
of musicnn's input and cost (about 9 ms per clip on 2 cores) on the spot. Without ``--audio`` it
encodes a 4-minute stereo 44.1 kHz mix of tones and noise as mp3 and flac. Prints Markdown for
the README: stages of a full analysis timed alone (decode, resample, features, backbone and
heads on every clip), then end to end as ``genreml`` runs it with every clip (``--clips all``,
decoding a thread ahead of inference) and with the default budget (seek-decoded clips), then a
fresh ``genreml analyze`` process on the mp3 (imports and model loading included) and peak
memory on a 2-hour file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tagger.audio import decode_blocks, frame_clips, to_mono  # noqa: E402
from tagger.budget import ClipBudget  # noqa: E402
from tagger.features import log_mel  # noqa: E402
from tagger.model import ModelError, load_models  # noqa: E402
from tagger.predict import Analyzer  # noqa: E402


def music_like(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Stereo float32: a few drifting tones, beats of noise, so codecs have work to do."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(0.1 * np.sin(2 * np.pi * f * t * (1 + 0.01 * np.sin(t))) for f in (110, 220, 330, 587))
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.normal(0, 0.3, len(t))
    y = (y + beat).astype(np.float32)
    return np.stack([y, np.roll(y, 100)], axis=1)


def write_long_flac(path: Path, seconds: float, sr: int = 44100) -> Path:
    """A long stereo FLAC written block by block (never whole in memory)."""
    block = music_like(60.0, sr)
    with sf.SoundFile(path, "w", sr, 2, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)
    return path


def model_source(tmp: Path, given: str) -> str:
    """What ``--model`` names: a file or folder as given; ``musicnn-sized``, a stand-in of
    musicnn's input and cost built in ``tmp``; nothing, "" for the bundled models if any, else
    the stand-in."""
    if not given:
        try:
            load_models()
            return ""
        except ModelError:
            given = "musicnn-sized"
    if given == "musicnn-sized":
        import onnx_models

        return str(onnx_models.musicnn_sized_model(tmp / "musicnn_sized.onnx"))
    return given


def timed(fn, *args, repeat: int = 5):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def stages(path: Path, analyzer: Analyzer) -> dict[str, float]:
    models = analyzer.models
    sr, clip = models.sample_rate, models.clip_seconds

    def decode():
        native, blocks = decode_blocks(path)
        return native, np.concatenate([to_mono(b) for b in blocks])

    t_decode, (native, y) = timed(decode)
    t_resample, y16 = timed(lambda: soxr.resample(y, native, sr, quality="HQ"))
    clips = np.array(frame_clips(y16, int(clip * sr), int(clip * sr)))
    t_feat, mel = timed(lambda: log_mel(clips, sr, models.backbone.features))
    t_inf, _ = timed(lambda: models.apply_heads(models.backbone.embed(mel)))
    every = Analyzer(models, budget=ClipBudget.parse("all"))
    t_total, result = timed(lambda: every.analyze(path))
    t_budget, budgeted = timed(lambda: analyzer.analyze(path))
    return {"decode": t_decode, "resample": t_resample, "features": t_feat,
            "inference": t_inf, "end_to_end": t_total, "duration": result.duration,
            "clips": result.clips, "budgeted": t_budget, "budget_clips": budgeted.clips}


def peak_memory(path: Path, model_arg: str) -> tuple[float, float]:
    """Peak RSS (MB, VmHWM: ru_maxrss would carry the parent's peak across exec) and seconds
    of a fresh process analysing ``path``."""
    code = (
        "import sys, time; sys.path[:0] = sys.argv[3:]\n"
        "from tagger.model import load_models; from tagger.predict import Analyzer\n"
        "a = Analyzer(load_models(sys.argv[2] or None))\n"
        "t = time.perf_counter(); r = a.analyze(sys.argv[1])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(time.perf_counter() - t, int(hwm.split()[1]) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path), model_arg, str(ROOT),
                          str(ROOT / "tests")], check=True, capture_output=True, text=True)
    seconds, mb = map(float, out.stdout.split())
    return mb, seconds


def cold_start(path: Path, model_arg: str, repeat: int = 3) -> float:
    """Best wall time of a fresh ``genreml analyze`` process on ``path``: interpreter start,
    imports, model loading and the analysis."""
    cmd = [sys.executable, "-m", "tagger.cli", "analyze", "--device", "cpu", str(path)]
    if model_arg:
        cmd[4:4] = ["--models", model_arg]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="",
                    help="model folder or head file, or 'musicnn-sized' (built on the spot)")
    ap.add_argument("--audio", nargs="*", type=Path, default=None)
    ap.add_argument("--long-minutes", type=float, default=120.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="genreml-bench-"))
    model_arg = model_source(tmp, args.model)
    models = load_models(model_arg or None, device="cpu")
    analyzer = Analyzer(models)
    print(f"cores: {len(os.sched_getaffinity(0))}, models: "
          f"{', '.join(m.path.name for m in [models.backbone, *models.heads])}, "
          f"providers: {models.providers}")
    files = args.audio
    if not files:
        mix = music_like(240.0, 44100)
        files = [tmp / "track.mp3", tmp / "track.flac"]
        sf.write(files[0], mix, 44100, format="MP3")
        sf.write(files[1], mix, 44100, format="FLAC")
    print("\n| file | decode | resample | features | inference | every clip | real-time "
          "factor | default budget | real-time factor |")
    print("|---|---|---|---|---|---|---|---|---|")
    per_clip = []
    for path in files:
        s = stages(path, analyzer)
        print(f"| {path.suffix[1:]} {s['duration'] / 60:.1f} min, {s['clips']} clips "
              f"| {s['decode']:.3f} s | {s['resample']:.3f} s | {s['features']:.3f} s "
              f"| {s['inference']:.3f} s | {s['end_to_end']:.3f} s "
              f"| {s['duration'] / s['end_to_end']:.0f}x | {s['budgeted']:.3f} s, "
              f"{s['budget_clips']} clips | {s['duration'] / s['budgeted']:.0f}x |")
        per_clip.append(s["inference"] / s["clips"] * 1000)
    print(f"\ninference alone: {min(per_clip):.1f} ms per 3-s clip; a fresh `genreml analyze` "
          f"process on the {files[0].suffix[1:]}: {cold_start(files[0], model_arg):.2f} s")
    long = write_long_flac(tmp / "long.flac", args.long_minutes * 60)
    mb, seconds = peak_memory(long, model_arg)
    print(f"\n{args.long_minutes:.0f}-minute FLAC (44.1 kHz stereo): peak RSS {mb:.0f} MB, "
          f"{seconds:.1f} s ({args.long_minutes * 60 / seconds:.0f}x real time)")


if __name__ == "__main__":
    main()
