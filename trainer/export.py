"""Keras to ONNX, genreml metadata, parity checks, and the backbone and head files.

A genreml model folder holds a backbone file (``mel`` in, ``embedding`` out) and head files
(``embedding`` in, one output per task; :mod:`tagger.modelmeta`). Two shapes come out of the
trainer, and both are written through :func:`trainer.split.save_split`:

* a ``cnn`` model, converted whole from Keras (``tf2onnx``, opset 17), cut before its last
  dense layer: its backbone is specific to it;
* a frozen backbone joined with one or more heads (:func:`join`): the backbone's names get the
  prefix ``backbone/``, each head's the prefix ``<task>/``, and the tensor between them is
  called ``embedding`` (the chosen backbone outputs, flattened and concatenated). Cut there, the
  backbone file is the same for every head trained on it.

Every export is checked: the ONNX outputs must match the reference (Keras, or the joined graph)
on held-out inputs within :data:`PARITY_TOLERANCE`, or nothing is written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper

from tagger.modelmeta import PREFIX
from tagger.onnxsession import open_session

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)

__all__ = [
    "BACKBONE_PREFIX",
    "EMBEDDING",
    "OPSET",
    "PARITY_TOLERANCE",
    "ExportError",
    "backbone_part",
    "bare_head",
    "check_parity",
    "join",
    "keras_to_onnx",
    "parity_diffs",
    "run_onnx",
    "save_model",
    "set_metadata",
]

OPSET = 17
PARITY_TOLERANCE = 1e-4
EMBEDDING = "embedding"
INPUT = "mel"
BACKBONE_PREFIX = "backbone/"


class ExportError(RuntimeError):
    """An export that failed its checks; nothing was written."""


def _quiet_tf() -> None:
    """Silence TensorFlow's C++ start-up logging before it is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --------------------------------------------------------------------------- Keras -> ONNX


def keras_to_onnx(model: "keras.Model", opset: int = OPSET) -> onnx.ModelProto:
    """Convert a single-input Keras model with ``tf2onnx``; the ONNX input and outputs keep the
    Keras input and output-layer names (``mel``/``embedding``; ``genre``/``emotion``)."""
    _quiet_tf()
    import tensorflow as tf
    import tf2onnx

    (inp,) = model.inputs
    name = inp.name.split(":")[0]
    spec = (tf.TensorSpec((None, *inp.shape[1:]), tf.float32, name=name),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(model.output_names):
        raise ExportError(f"tf2onnx named the outputs {outputs}, expected {model.output_names}")
    return proto


# --------------------------------------------------------------------------- checks, files


def run_onnx(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray],
             outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run a model (in memory or on disk) with onnxruntime on the CPU."""
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    session = open_session(source)
    names = list(outputs) if outputs else [o.name for o in session.get_outputs()]
    feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
    return dict(zip(names, session.run(names, feeds)))


def parity_diffs(
    ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
) -> dict[str, tuple[float, float]]:
    """Per-output ``(max |ref - got|, that divided by max(1, max |ref|))``.

    The scaled figure is the absolute difference for outputs within [-1, 1] (probabilities,
    a taggram) and a relative one for unnormalised features: musicnn's ``max_pool`` reaches
    ~90, where one float32 ulp is ~8e-6 and a different (equally valid) summation order in a
    conv moves the result by 1e-4 and more after batch norm scales of up to ~40.

    Returns
    -------
    dict of str to (float, float)
        ``inf`` for a missing, misshapen or non-finite output.
    """
    diffs = {}
    for name, expected in ref.items():
        actual = got.get(name)
        if actual is None or actual.shape != np.shape(expected):
            diffs[name] = (float("inf"), float("inf"))
            continue
        expected = np.asarray(expected).astype(np.float64)
        raw = float(np.max(np.abs(expected - actual), initial=0.0))
        if not np.isfinite(raw):
            raw = float("inf")
        diffs[name] = (raw, raw / max(1.0, float(np.max(np.abs(expected), initial=0.0))))
    return diffs


def check_parity(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray],
                 expected: Mapping[str, np.ndarray],
                 tolerance: float = PARITY_TOLERANCE, reference: str = "the reference") -> float:
    """Largest difference between the ONNX outputs and ``expected`` (Keras, TensorFlow, the
    models being combined), on the CPU.

    Parameters
    ----------
    model : onnx.ModelProto, str or Path
        The model to check.
    feeds : mapping of str to np.ndarray
        Its inputs.
    expected : mapping of str to np.ndarray
        The reference's outputs, by ONNX output name.
    tolerance : float
        Largest allowed figure.
    reference : str
        What ``expected`` came from, for the error message.

    Returns
    -------
    float
        ``max |onnx - expected| / max(1, max |expected|)`` over the outputs (see
        :func:`parity_diffs`): the plain max abs diff for probabilities, relative for large
        features.

    Raises
    ------
    ExportError
        Above ``tolerance`` (or NaN, or a missing or misshapen output).
    """
    got = run_onnx(model, feeds, list(expected))
    diffs = parity_diffs(expected, got)
    log.debug("parity against %s (max abs diff / scaled): %s", reference,
              ", ".join(f"{k} {raw:.2e}/{scaled:.2e}" for k, (raw, scaled) in diffs.items()))
    diff = max(scaled for _, scaled in diffs.values())
    if not diff <= tolerance:
        raise ExportError(f"ONNX outputs differ from {reference} by {diff:.3g} > {tolerance:g}")
    return diff


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace the model's ``genreml.*`` metadata with ``metadata``."""
    kept = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Check and write ``model`` atomically (a folder never holds half a model)."""
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


# --------------------------------------------------------------------------- graph surgery


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere in ``graph`` (nodes, inputs, outputs, value infos)."""
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.name == old:
            info.name = new


def _clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without metadata (merging refuses models whose metadata conflict)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.metadata_props[:]
    return out


def _width(info: onnx.ValueInfoProto) -> int | None:
    """Values per batch item of a ``[batch, ...]`` tensor, when its shape is static."""
    dims = info.type.tensor_type.shape.dim[1:]
    if not dims or not all(d.HasField("dim_value") for d in dims):
        return None
    return int(np.prod([d.dim_value for d in dims]))


def backbone_part(backbone: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """The backbone from ``mel`` to ``embedding``: the named outputs flattened to
    ``[batch, n]`` and concatenated, names prefixed with ``backbone/``, other outputs pruned.

    The order of ``outputs`` is the order of the concatenation (as in
    :meth:`trainer.features_cache.OnnxBackbone.embed`).
    """
    if len(backbone.graph.input) != 1:
        raise ExportError("a backbone has exactly one input")
    available = [o.name for o in backbone.graph.output]
    unknown = [o for o in outputs if o not in available]
    if unknown or not outputs:
        raise ExportError(f"backbone has no outputs {unknown}; it has {available}")
    model = onnx.compose.add_prefix(_clean(backbone), BACKBONE_PREFIX)
    _rename(model.graph, BACKBONE_PREFIX + backbone.graph.input[0].name, INPUT)
    flat = [f"{BACKBONE_PREFIX}flat/{o}" for o in outputs]
    model.graph.node.extend(
        [helper.make_node("Flatten", [BACKBONE_PREFIX + o], [f], axis=1)
         for o, f in zip(outputs, flat)]
        + [helper.make_node("Concat", flat, [EMBEDDING], axis=1)]
    )
    width = sum(_width(o) or 0 for o in backbone.graph.output if o.name in outputs) or None
    model.graph.output.append(
        helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", width]))
    # keep only what the embedding needs (musicnn's taggram and unused pools go)
    return onnx.utils.Extractor(model).extract_model([INPUT], [EMBEDDING])


def bare_head(head: onnx.ModelProto, task: str) -> onnx.ModelProto:
    """A converted Keras head (input ``embedding``, output ``task``) with its other names
    prefixed ``<task>/`` so several heads and a backbone can share one graph."""
    (inp,) = [i.name for i in head.graph.input]
    if [o.name for o in head.graph.output] != [task]:
        raise ExportError(f"the {task} head must have the single output {task!r}")
    model = onnx.compose.add_prefix(_clean(head), f"{task}/")
    _rename(model.graph, f"{task}/{inp}", EMBEDDING)
    _rename(model.graph, f"{task}/{task}", task)
    return model


def _same_ir(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    """Raise the older IR version to the newer (merging requires equal ones)."""
    a.ir_version = b.ir_version = max(a.ir_version, b.ir_version)


def _attach(base: onnx.ModelProto, heads: Sequence[onnx.ModelProto]) -> onnx.ModelProto:
    """Join a backbone part (output ``embedding``) and bare heads with ``onnx.compose``;
    the result's outputs are the heads' task outputs, in order."""
    model = base
    tasks: list[str] = []
    for head in heads:
        head = _clean(head)
        # the junction is described once, by the backbone (merging refuses repeated infos)
        infos = [v for v in head.graph.value_info if v.name != EMBEDDING]
        del head.graph.value_info[:]
        head.graph.value_info.extend(infos)
        _same_ir(model, head)
        tasks += [o.name for o in head.graph.output]
        model = onnx.compose.merge_models(model, head, io_map=[(EMBEDDING, EMBEDDING)],
                                          outputs=[EMBEDDING, *tasks])
    keep = [o for o in model.graph.output if o.name in tasks]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    # merge_models lists each model's opset imports; keep one entry per domain
    imports = {(o.domain, o.version) for o in model.opset_import}
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(imports))
    onnx.checker.check_model(model)
    return model


def join(backbone: onnx.ModelProto, outputs: Sequence[str],
         heads: Mapping[str, onnx.ModelProto]) -> onnx.ModelProto:
    """One graph: ``mel`` -> backbone -> ``embedding`` -> one output per head.

    Parameters
    ----------
    backbone : onnx.ModelProto
        Frozen backbone with one input ``[batch, n_frames, n_mels]``.
    outputs : sequence of str
        Backbone outputs forming the embedding.
    heads : mapping
        task -> converted Keras head (input ``embedding``, output ``task``).
    """
    base = backbone_part(backbone, outputs)
    return _attach(base, [bare_head(h, task) for task, h in heads.items()])
