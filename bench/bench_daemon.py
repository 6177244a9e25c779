"""``genreml watch`` throughput: N small files dropped at once into a watched folder.

Run by hand (not in CI), pinned to 2 cores like the CI machine::

    taskset -c 0,1 python bench/bench_daemon.py [--files 500] [--seconds 5] [--workers 1]
                                                [--settle 2] [--model FILE.onnx]

Encodes ``--files`` distinct stereo 44.1 kHz FLACs of ``--seconds`` each in a staging folder,
starts the daemon as a real process (it says READY=1 on a notify socket bound here), renames
every file into the watched folder at once and waits until the cache's job queue has them all
done. Without ``--model`` it uses the bundled models if any; ``--model musicnn-sized`` builds
a model of musicnn's input and cost on the spot. Prints the wall time from the drop to the
last file tagged (the settle time included), files per minute, and the daemon's peak memory
(VmHWM).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bench_pipeline import model_source, music_like  # noqa: E402
from tagger.cache import Cache  # noqa: E402


def make_files(folder: Path, count: int, seconds: float) -> list[Path]:
    """Distinct files (their noise differs), so none is found by another's fingerprint."""
    folder.mkdir()
    files = []
    for i in range(count):
        path = folder / f"{i:04d}.flac"
        sf.write(path, music_like(seconds, 44100, seed=i), 44100, format="FLAC",
                 subtype="PCM_16")
        files.append(path)
    return files


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a live process, MB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def wait_idle(sock: socket.socket, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Until the daemon said READY=1 and a STATUS= after its start-up scan of the (empty)
    folder: the drop must meet the event path, not the scan."""
    deadline = time.monotonic() + timeout
    ready = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with status {proc.returncode}")
        try:
            message = sock.recv(4096).decode()
        except socket.timeout:
            continue
        ready = ready or "READY=1" in message
        status = [line for line in message.splitlines() if line.startswith("STATUS=")]
        if ready and status and "scanning" not in status[0]:
            return
    raise SystemExit("the daemon did not get ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each file")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--model", default="",
                    help="ONNX model file or folder, or 'musicnn-sized' (built on the spot)")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temp)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="genreml-bench-daemon-", dir=args.dir))
    model = model_source(tmp, args.model)
    print(f"cores: {len(os.sched_getaffinity(0))}, model: {model or 'bundled'}, "
          f"{args.files} x {args.seconds:.0f}-s FLAC, {args.workers} worker(s), "
          f"settle {args.settle:.1f} s")
    start = time.perf_counter()
    files = make_files(tmp / "staging", args.files, args.seconds)
    print(f"encoded in {time.perf_counter() - start:.1f} s")

    watched, cache_path = tmp / "music", tmp / "cache.db"
    watched.mkdir()
    sock_path = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    cmd = [sys.executable, "-m", "tagger.cli", "watch", "--settle", str(args.settle),
           "--workers", str(args.workers), "--cache", str(cache_path), str(watched),
           *(["--models", model] if model else [])]
    log = open(tmp / "watch.log", "wb")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT,
                            env={**os.environ, "NOTIFY_SOCKET": str(sock_path)})
    try:
        wait_idle(sock, proc)
        print(f"daemon ready in {time.perf_counter() - start:.1f} s (pid {proc.pid})")
        dropped = time.perf_counter()
        for path in files:  # a rename: each file appears whole, all within milliseconds
            os.rename(path, watched / path.name)
        with Cache(cache_path) as cache:
            while True:
                counts = cache.counts()
                if counts["done"] + counts["failed"] >= args.files:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"the daemon died: see {tmp / 'watch.log'}")
                time.sleep(0.2)
        wall = time.perf_counter() - dropped
        peak = vm_hwm_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        sock.close()
    print("\n| files | workers | wall (drop -> all tagged) | files/min | daemon peak RSS |")
    print("|---|---|---|---|---|")
    print(f"| {args.files} x {args.seconds:.0f} s FLAC | {args.workers} | {wall:.1f} s "
          f"(settle {args.settle:.0f} s incl.) | {args.files / wall * 60:.0f} | {peak:.0f} MB |")
    print(f"\ndone {counts['done']}, failed {counts['failed']}; log: {tmp / 'watch.log'}")


if __name__ == "__main__":
    main()
