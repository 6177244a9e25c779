"""Opt-in int8 quantisation of a backbone's widest convs (NOT exact; not shipped)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

__all__ = ["quantize_front_end"]


def _wide_kernel_convs(model: onnx.ModelProto) -> list[str]:
    """Convs with a 2-D kernel (both sides > 1): musicnn's two timbral front-end convs."""
    inits = {i.name: i for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in inits:
            dims = list(inits[node.input[1]].dims)
            if len(dims) == 4 and dims[2] > 1 and dims[3] > 1:
                names.append(node.name)
    return names


def quantize_front_end(model: onnx.ModelProto, calibration_mel: np.ndarray,
                       nodes: Iterable[str] | None = None, batch: int = 8) -> onnx.ModelProto:
    """Static int8 quantisation (QDQ) of selected convs only; NOT exact, see below.

    onnxruntime's int8 ``QLinearConv`` (u8 activations, per-channel s8 weights, VNNI) runs
    musicnn's two timbral convs ``[7, 38]`` and ``[7, 67]`` (some 80% of the float32 time)
    about twice as fast as its float32 kernels, but its temporal ``[k, 1]`` convs 2-5x
    *slower*, and quantising the mid end costs most of the accuracy; so by default only the
    convs with a 2-D kernel are quantised. Embeddings move by ~1e-2 (mean abs) and up to
    ~0.1: whether decisions survive must be checked on real tracks before shipping it.

    Parameters
    ----------
    model : onnx.ModelProto
        A float32 backbone (e.g. :func:`optimize_backbone`'s output).
    calibration_mel : np.ndarray [shape=(n, frames, mels)]
        Log-mel patches of real audio for the activation ranges (min/max), not the tracks
        the result is judged on.
    nodes : iterable of str, optional
        Names of the nodes to quantise (default: the convs with a 2-D kernel).
    batch : int
        Calibration batch size.

    Returns
    -------
    onnx.ModelProto
        QDQ model (portable ONNX; onnxruntime's CPU provider fuses it into QLinearConv)
        with ``model``'s metadata_props.
    """
    import tempfile

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)

    input_name = model.graph.input[0].name
    mel = np.ascontiguousarray(calibration_mel, np.float32)

    class _Patches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{input_name: mel[i:i + batch]}
                                  for i in range(0, len(mel), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    selected = list(nodes) if nodes is not None else _wide_kernel_convs(model)
    if not selected:
        raise ValueError("no nodes to quantise")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_static(model, out, _Patches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_quantize=selected)
        quantized = onnx.load(str(out))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    return quantized
