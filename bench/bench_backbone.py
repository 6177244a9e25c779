"""Time the bundled backbone against its optimised graph (trainer.optimize), side by side.

    taskset -c 0,1 python bench/bench_backbone.py [--batch 8] [--threads 2] [--clips 32]
        [--audio DIR ...] [--optimized FILE] [--save FILE] [--no-profile]
        [--int8-calibration DIR ...]

Both graphs run in one process with genreml's session options, in alternating rounds (so a
neighbour's load hits both alike): each round embeds ``--clips`` patches, ``--batch`` at a
time, once per graph. Prints milliseconds per 3-s clip (median, quartiles, best round), the
parity of the embeddings, and onnxruntime's profile of each graph as a table of op types by
share of kernel time. Patches come from real audio when ``--audio`` names files or folders
(the first 90 s of each, 3-s clips 6 s apart), else from music-like synthetic clips.
``--int8-calibration`` (audio other than ``--audio``'s) adds a third graph: the optimised one
with its timbral convs quantised to int8 (:func:`trainer.optimize.quantize_front_end`; not
exact, its embedding differences are printed).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

BACKBONE = ROOT / "tagger" / "models" / "MSD_musicnn.onnx"


def patches(audio: list[Path], n: int) -> np.ndarray:
    """``n`` log-mel patches of real audio (cycled), or of synthetic clips without audio."""
    from tagger.audio import find_audio, frame_clips, load
    from tagger.features import MUSICNN_FEATURES, log_mel

    sr = 16000
    if not audio:
        from trainer.musicnn.parity_audio import parity_features
        return np.resize(parity_features(max(n, 8)), (n, MUSICNN_FEATURES.n_frames,
                                                      MUSICNN_FEATURES.n_mels))
    out = []
    for path in sorted(find_audio(audio)):
        y = load(path, sr, max_seconds=90)
        clips = frame_clips(y, 3 * sr, 6 * sr)
        if len(clips):
            out.append(log_mel(np.ascontiguousarray(clips), sr, MUSICNN_FEATURES))
        if sum(len(o) for o in out) >= n:
            break
    if not out:
        raise SystemExit(f"no decodable audio in {audio}")
    mel = np.concatenate(out)
    return np.resize(mel, (n, *mel.shape[1:])).astype(np.float32)


def time_rounds(models: dict[str, bytes], mel: np.ndarray, batch: int, threads: int,
                rounds: int) -> dict[str, list[float]]:
    """ms per clip of each model, one entry per round, the models alternating."""
    from tagger.onnxsession import open_session

    sessions = {k: open_session(m, threads) for k, m in models.items()}

    def run(session) -> None:
        name = session.get_inputs()[0].name
        for start in range(0, len(mel), batch):
            session.run(None, {name: mel[start:start + batch]})

    for s in sessions.values():  # warm up (allocations, thread pool)
        run(s)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
        for k in order:
            t0 = time.perf_counter()
            run(sessions[k])
            times[k].append((time.perf_counter() - t0) * 1000.0 / len(mel))
    return times


def op_profile(model: bytes, mel: np.ndarray, batch: int, threads: int,
               runs: int = 10) -> tuple[dict[str, float], dict[str, int]]:
    """Kernel milliseconds per clip by op type (median over runs), and node counts."""
    import onnxruntime as ort

    from tagger.onnxsession import session_options

    opts = session_options(threads)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.resize(mel, (batch, *mel.shape[1:]))}
        for _ in range(3):
            session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    # Attribute each kernel event to the model_run it falls in.
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events
               if e.get("cat") == "Session" and e.get("name") == "model_run"][-runs:]
    per_run = [collections.Counter() for _ in windows]
    nodes: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        for i, (t0, t1) in enumerate(windows):
            if t0 <= e["ts"] <= t1:
                per_run[i][e["args"]["op_name"]] += e["dur"]
                nodes[e["name"]] = e["args"]["op_name"]
    counts = collections.Counter(nodes.values())
    ops = {op for r in per_run for op in r}
    ms = {op: float(np.median([r.get(op, 0) for r in per_run])) / 1000.0 / batch for op in ops}
    return ms, dict(counts)


def print_profiles(profiles: dict[str, tuple[dict[str, float], dict[str, int]]]) -> None:
    names = list(profiles)
    ops = sorted({op for ms, _ in profiles.values() for op in ms},
                 key=lambda op: -profiles[names[0]][0].get(op, 0.0))
    totals = {k: sum(ms.values()) for k, (ms, _) in profiles.items()}
    head = "".join(f" | {k:>26s}" for k in names)
    print(f"{'op type (onnxruntime kernel)':28s}{head}")
    print(f"{'':28s}" + " | share   ms/clip  nodes" * len(names))
    for op in ops:
        row = ""
        for k in names:
            ms, counts = profiles[k]
            v = ms.get(op, 0.0)
            row += f" | {100 * v / totals[k]:5.1f}% {v:8.3f} {counts.get(op, 0):6d}" if op in ms \
                else f" | {'-':>5s}  {'-':>8s} {'-':>6s}"
        print(f"{op:28s}{row}")
    print(f"{'total kernel time':28s}" + "".join(
        f" | {100.0:5.1f}% {totals[k]:8.3f} {sum(profiles[k][1].values()):6d}" for k in names))


def main() -> None:
    import onnx

    from trainer.optimize import backbone_parity, optimize_backbone, quantize_front_end

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", type=Path, default=BACKBONE)
    ap.add_argument("--optimized", type=Path, help="an optimised file (default: optimise now)")
    ap.add_argument("--save", type=Path, help="write the optimised graph here")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clips", type=int, default=32, help="patches per round (one track)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--audio", nargs="*", type=Path, default=[])
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--int8-calibration", nargs="*", type=Path, default=[],
                    help="audio to calibrate an int8 variant on (adds a third graph)")
    args = ap.parse_args()

    original = onnx.load(str(args.original))
    optimized = onnx.load(str(args.optimized)) if args.optimized else optimize_backbone(original)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(optimized, str(args.save))
    models = {"original": original.SerializeToString(),
              "optimised": optimized.SerializeToString()}
    if args.int8_calibration:
        calibration = patches(args.int8_calibration, 64)
        models["int8 timbral"] = quantize_front_end(optimized, calibration).SerializeToString()
    mel = patches(args.audio, args.clips)
    print(f"{args.original.name}: {len(original.graph.node)} nodes -> "
          f"{len(optimized.graph.node)}; {len(mel)} patches "
          f"({'real audio' if args.audio else 'synthetic'}), batch {args.batch}, "
          f"{args.threads} threads, cores {sorted(os.sched_getaffinity(0))}")
    for k in list(models)[1:]:
        for name, (mx, mean) in backbone_parity(models["original"], models[k], mel).items():
            print(f"{k} vs original, {name}: max |diff| {mx:.2e}, mean {mean:.2e}")

    times = time_rounds(models, mel, args.batch, args.threads, args.rounds)
    base = np.median(times["original"])
    for k, v in times.items():
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        print(f"{k:12s} {med:6.2f} ms/clip (quartiles {q1:.2f}-{q3:.2f}, best {min(v):.2f}; "
              f"{100 * (med / base - 1):+.1f}% vs original)")
    for k in list(models)[1:]:
        ratio = np.array(times[k]) / np.array(times["original"])
        print(f"{k}/original per round: median {np.median(ratio):.3f} "
              f"(quartiles {np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f})")
    if not args.no_profile:
        print()
        print_profiles({k: op_profile(m, mel, args.batch, args.threads)
                        for k, m in models.items()})


if __name__ == "__main__":
    main()
