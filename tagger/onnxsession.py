"""One way to open an onnxruntime session, for the tagger and the trainer alike.

Every session genreml makes (the tagger's models, the trainer's parity checks, backbone
embeddings and timings) is opened here, so that they all run with the same options: one CPU
memory arena shared by the whole process, one inter-op thread, full graph optimisation, quiet
logging, and the telemetry warning said once. The trainer may import this module; nothing here
imports the trainer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from . import ORT_TELEMETRY_ON

log = logging.getLogger(__name__)

__all__ = ["CPU", "PROVIDER_OPTIONS", "available_cores", "open_session", "session_options"]

CPU = ("CPUExecutionProvider",)
# TF32 convolutions (onnxruntime's CUDA default on Ampere and later) move probabilities by
# about 1e-3 from the CPU's; plain float32 keeps GPU and CPU results interchangeable.
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {"CUDAExecutionProvider": {"use_tf32": "0"}}


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_shared_arena = threading.Lock()
_shared_arena_ready = False


def _share_cpu_arena() -> None:
    """Register one CPU memory arena for every session of this process (once).

    Each session would otherwise keep its own arena, as large as its biggest batch's
    activations; sessions that take turns (one model at two thread counts) need only one.
    """
    global _shared_arena_ready
    with _shared_arena:
        if not _shared_arena_ready:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _shared_arena_ready = True


_telemetry_warned = False


def _warn_if_telemetry_on() -> None:
    """Say once when onnxruntime was imported, telemetry on, before genreml could stop it."""
    global _telemetry_warned
    if ORT_TELEMETRY_ON and not _telemetry_warned:
        _telemetry_warned = True
        log.warning("onnxruntime was imported before genreml, with its telemetry on; set "
                    "ORT_DISABLE_TELEMETRY=1 in the environment to keep it from contacting "
                    "Microsoft")


def session_options(threads: int) -> ort.SessionOptions:
    """Options of every genreml session: ``threads`` intra-op threads, the shared arena.

    Parameters
    ----------
    threads : int
        ``intra_op_num_threads``.

    Returns
    -------
    onnxruntime.SessionOptions
    """
    _warn_if_telemetry_on()
    _share_cpu_arena()
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.use_env_allocators", "1")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def open_session(
    model: str | Path | bytes, threads: int | None = None, providers: Sequence[str] = CPU,
) -> ort.InferenceSession:
    """An onnxruntime session with genreml's options (on the CPU unless told).

    Parameters
    ----------
    model : str, Path or bytes
        An ONNX file, or a serialised model.
    threads : int, optional
        Intra-op threads (default: :func:`available_cores`).
    providers : sequence of str
        Execution providers in order of preference; CUDA gets :data:`PROVIDER_OPTIONS`.

    Returns
    -------
    onnxruntime.InferenceSession
    """
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, session_options(threads or available_cores()),
                                providers=list(providers),
                                provider_options=[PROVIDER_OPTIONS.get(p, {}) for p in providers])
