"""How far an optimised backbone's outputs are from the original's, run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

__all__ = ["PARITY_TOLERANCE", "backbone_parity", "check_backbone_parity"]

# Largest max abs embedding difference we accept (the trainer's export parity figure).
PARITY_TOLERANCE = 1e-4


def backbone_parity(original: onnx.ModelProto | bytes | str | Path,
                    optimized: onnx.ModelProto | bytes | str | Path,
                    mel: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per output, ``(max |a - b|, mean |a - b|)`` of two graphs run by onnxruntime (CPU).

    Parameters
    ----------
    original, optimized : onnx.ModelProto, bytes, str or Path
        Graphs (in memory, serialised or on disk) with the same single input and output names.
    mel : np.ndarray [shape=(n, frames, mels)]
        Their input (log-mel patches of real or music-like audio: zeros or noise would hide
        errors).

    Returns
    -------
    dict of str to (float, float)
    """
    from tagger.onnxsession import open_session

    runs = []
    for m in (original, optimized):
        source = (m.SerializeToString() if isinstance(m, onnx.ModelProto)
                  else m if isinstance(m, bytes) else Path(m))
        session = open_session(source)
        names = [o.name for o in session.get_outputs()]
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(mel, np.float32)}
        runs.append(dict(zip(names, session.run(names, feed))))
    a, b = runs
    if set(a) != set(b):
        raise ValueError(f"the graphs have different outputs: {sorted(a)} vs {sorted(b)}")
    diffs = {}
    for name in a:
        if a[name].shape != b[name].shape:
            diffs[name] = (float("inf"), float("inf"))
            continue
        d = np.abs(a[name].astype(np.float64) - b[name])
        diffs[name] = (float(d.max(initial=0.0)), float(d.mean()) if d.size else 0.0)
    return diffs


def check_backbone_parity(original: onnx.ModelProto | bytes | str | Path,
                          optimized: onnx.ModelProto | bytes | str | Path, mel: np.ndarray,
                          tolerance: float = PARITY_TOLERANCE) -> float:
    """The largest max abs output difference (:func:`backbone_parity`); raises above
    ``tolerance``.

    Raises
    ------
    ValueError
        When some output differs by more than ``tolerance`` (or is NaN or misshapen).
    """
    diffs = backbone_parity(original, optimized, mel)
    worst = max(mx for mx, _ in diffs.values())
    if not worst <= tolerance:
        raise ValueError(f"optimised outputs differ by {worst:.3g} > {tolerance:g}: {diffs}")
    return worst
