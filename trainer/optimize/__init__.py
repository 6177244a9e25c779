"""Rewrite a converted backbone graph so that onnxruntime runs it faster, outputs unchanged.

tf2onnx converts musicnn's TensorFlow (NHWC) graph op by op. What it leaves is correct but
shaped for TensorFlow, and onnxruntime pays for some of it on every clip:

* the mid end convolves a one-channel ``[batch, 1, time, 561]`` image with a ``[7, 561]``
  kernel that spans its whole width: an NCHWc convolution with a single input channel, at
  about half the speed of the same arithmetic as a 1-D convolution over 561 channels;
* layout changes between NCHW and TensorFlow's NHWC written as chains of ``Transpose`` and
  ``Reshape`` around every mid-end layer, the residual ``Add``, the concatenation and the
  time pooling;
* five parallel ``Slice -> Mul -> Relu -> BatchNormalization -> Squeeze`` tails (the front
  end after :func:`trainer.musicnn.rewrite.pool_before_batchnorm`) on small maps, 25 kernel
  launches where 5 do;
* the dense layer's input batch norm as ``Mul``/``Add`` in front of the ``MatMul``, and
  ``Identity``, one-input ``Concat`` and no-op ``Flatten`` nodes.

:func:`optimize_backbone` rewrites these with ``onnx`` alone (no onnxruntime optimisation is
saved in the file, so it stays portable to every execution provider). Every rewrite is exact
in real arithmetic; float32 results move by rounding only (weights folded together, another
summation order in a convolution): musicnn's embeddings (values up to ~3.5) by under 1e-5.
:func:`backbone_parity` measures that against the original graph.

The convolutions of the front end (over 85% of the time) are left as they are: onnxruntime
already runs them near the CPU's float32 peak.

The rewrites live in :mod:`.fusion` (arithmetic folded together) and :mod:`.layout` (data
movement), on the indexes of :mod:`.graph`; :mod:`.parity` measures outputs against the
original, :mod:`.quantize` holds the opt-in int8 quantiser, and ``python -m trainer.optimize
FOLDER`` (:mod:`.folder`) optimises a model folder's backbone in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import onnx

from .fusion import (_drop_identities, _fold_affine_into_matmul, _fold_batchnorm_into_conv,
                     _full_width_conv_to_1d, _hoist_concat)
from .graph import _count, _Graph, _remove_dead, _toposort
from .layout import _collapse_movement, _reduce_unit_tail, _sink_transposes, _sink_unsqueeze
from .parity import PARITY_TOLERANCE, backbone_parity, check_backbone_parity
from .quantize import quantize_front_end

log = logging.getLogger(__name__)

__all__ = ["PARITY_TOLERANCE", "backbone_parity", "check_backbone_parity", "optimize_backbone",
           "quantize_front_end"]


_PASSES: tuple[tuple[str, Callable[[_Graph], int]], ...] = (
    ("identities", _drop_identities),
    ("conv+batchnorm", _fold_batchnorm_into_conv),
    ("full-width convs", _full_width_conv_to_1d),
    ("movement chains", _collapse_movement),
    ("transposes sunk", _sink_transposes),
    ("unsqueezes sunk", _sink_unsqueeze),
    ("concats hoisted", _hoist_concat),
    ("unit axes reduced", _reduce_unit_tail),
    ("affine into matmul", _fold_affine_into_matmul),
)


def optimize_backbone(model: onnx.ModelProto, *, max_rounds: int = 10) -> onnx.ModelProto:
    """A faster graph with the same inputs, outputs and metadata as ``model``.

    Each pass is applied until none changes the graph (see the module docstring):
    ``Identity`` and no-op nodes dropped, batch norms folded into the conv before them,
    one-channel full-width convs turned into 1-D convs, chains of layout ops collapsed,
    transposes moved down past elementwise ops, concatenations and reductions until they
    cancel, parallel per-channel tails merged after their concatenation, and the affine map
    before a MatMul folded into its weights.

    Parameters
    ----------
    model : onnx.ModelProto
        A backbone (or any float graph); not modified.
    max_rounds : int
        Rounds of all passes at most (the musicnn graph settles in three).

    Returns
    -------
    onnx.ModelProto
        The rewritten model, checked by ``onnx.checker`` (full check); ``metadata_props``,
        opset, IR version, input and output names and shapes as in ``model``.

    Raises
    ------
    onnx.checker.ValidationError
        If a rewrite produced an invalid graph (a bug: nothing is returned then).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]  # stale after rewriting; onnxruntime infers its own
    counts: dict[str, int] = {}
    for _ in range(max_rounds):
        before = onnx.ModelProto()
        before.CopyFrom(out)
        changed: dict[str, int] = {}
        for name, rewrite in _PASSES:
            changed[name] = rewrite(_Graph(out))
            _remove_dead(out)
            _toposort(out)
        if not any(changed.values()):
            break
        # A round may add a Transpose on the way to removing two; one that ends with more
        # (transposes sunk into a dead end) is undone.
        if _count(out, "Transpose") > _count(before, "Transpose"):
            out = before
            break
        for name, n in changed.items():
            counts[name] = counts.get(name, 0) + n
    log.debug("optimize_backbone: %s", ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    onnx.checker.check_model(out, full_check=True)
    return out
