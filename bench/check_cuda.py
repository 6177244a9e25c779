"""On a machine with onnxruntime-gpu and an NVIDIA GPU: is the CUDA provider chosen, does it
give the CPU's results, and how fast is it? Run by hand; CI has no GPU::

    python bench/check_cuda.py [--model FILE.onnx]

Prints the providers ``--device auto`` picks, the largest difference between CUDA and CPU
probabilities (track level and per clip) on a 4-minute mp3, and seconds per clip on the GPU
for several batch sizes. Exits 1 when CUDA is not picked or the results disagree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tagger  # noqa: F401  (first: switches onnxruntime's telemetry off)
import onnxruntime as ort  # noqa: E402
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_pipeline import music_like  # noqa: E402
from tagger.features import log_mel  # noqa: E402
from tagger.model import load_models  # noqa: E402
from tagger.predict import Analyzer  # noqa: E402

TOLERANCE = 1e-4  # cuDNN sums in another order than the CPU: float32 rounding only


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="ONNX model file or folder (default: bundled)")
    args = ap.parse_args()
    if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels, if installed
        ort.preload_dlls()
    print(f"onnxruntime {ort.__version__}, available: {ort.get_available_providers()}")
    auto = load_models(args.model, device="auto")
    cpu = load_models(args.model, device="cpu")
    print(f"--device auto picks: {auto.providers}")
    if auto.providers[0] != "CUDAExecutionProvider":
        print("CUDA provider not picked")
        return 1
    path = Path(tempfile.mkdtemp(prefix="genreml-cuda-")) / "track.mp3"
    sf.write(path, music_like(240.0, 44100), 44100, format="MP3")
    results = {}
    for name, models in (("cuda", auto), ("cpu", cpu)):
        analyzer = Analyzer(models)
        analyzer.analyze(path)  # warm-up: CUDA kernels, arenas
        start = time.perf_counter()
        results[name] = analyzer.analyze(path)
        print(f"{name}: 4-minute mp3 end to end {time.perf_counter() - start:.3f} s")
    worst = 0.0
    for task, head in results["cuda"].heads.items():
        ref = results["cpu"].heads[task]
        track = float(np.abs(head.probs - ref.probs).max())
        clips = float(np.abs(head.timeline - ref.timeline).max())
        worst = max(worst, track, clips)
        print(f"{task}: max |cuda - cpu| track {track:.2e}, clip {clips:.2e}")
    same = ([g for g, _ in results["cuda"].genres] == [g for g, _ in results["cpu"].genres]
            and results["cuda"].emotion[0] == results["cpu"].emotion[0])
    print(f"decisions (genres, mood) identical: {same}")
    model = auto.backbone
    rng = np.random.default_rng(0)
    mel = log_mel(rng.normal(0, 0.1, (256, int(model.clip_seconds * model.sample_rate)))
                  .astype(np.float32), model.sample_rate, model.features)
    for batch in (8, 32, 128, 256):
        model.batch_size = batch
        model.embed(mel[:batch])
        start = time.perf_counter()
        for _ in range(5):
            model.embed(mel)
        per_clip = (time.perf_counter() - start) / (5 * len(mel)) * 1000
        print(f"GPU inference, batch {batch}: {per_clip:.3f} ms per 3-s clip")
    ok = worst <= TOLERANCE and same
    print("OK" if ok else f"MISMATCH (tolerance {TOLERANCE})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
