"""Convert the pre-trained musicnn backbones (TF-1 checkpoints) to ONNX, with a parity check.

``musicnn==0.1.0`` (ISC licence; Pons & Serra 2019) ships TF-1.12 checkpoints whose
``.meta`` file holds the *training* graph: optimizer slots, gradients, and a TF-1 ``tf.cond``
(Switch/Merge) on an ``is_training`` placeholder around every batch norm and dropout.
``import_meta_graph`` does not load it under TF 2.x, and the layer code in
``musicnn/models.py`` (``tf.compat.v1.layers``) no longer exists with Keras 3, so we work on
the protobuf directly:

1. parse the MetaGraphDef and drop the ``_output_shapes``/``_class`` attributes;
2. replace the ``is_training`` placeholder with the constant ``False`` and resolve the
   Switch/Merge pairs statically (the inference branch is kept, dropout and batch statistics
   disappear);
3. turn variables into constants read with ``NewCheckpointReader``;
4. keep only the subgraph from the log-mel placeholder (renamed ``mel``) to the outputs;
5. convert with tf2onnx (opset 17), then max-pool the front-end conv maps before their ReLU
   and batch norm (an exact rewrite, see :func:`_pool_before_batchnorm`; ~25% less CPU time);
6. check the result against TensorFlow running the very same frozen graph, and write the
   file only when they agree.

The ONNX input is a log-mel patch ``[batch, 187, 96]`` as computed by
:func:`tagger.features.log_mel` with :data:`tagger.features.MUSICNN_FEATURES` (float32
throughout, unlike musicnn's own float16 mel which overflows on loud bins), not audio.

TensorFlow and tf2onnx are imported lazily: this module needs the ``train`` extra to do
anything, but importing it (or ``--help``) stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from tagger.features import MUSICNN_FEATURES, log_mel

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    from tensorflow.core.framework.graph_pb2 import GraphDef
    from tensorflow.core.framework.node_def_pb2 import NodeDef

__all__ = [
    "MODELS",
    "INPUT_NAME",
    "OUTPUT_DIMS",
    "PARITY_TOLERANCE",
    "checkpoint_dir",
    "musicnn_tags",
    "frozen_graph_def",
    "run_frozen_graph",
    "run_onnx",
    "check_parity",
    "parity_diffs",
    "parity_features",
    "convert_backbone",
    "time_per_clip",
    "main",
]

logger = logging.getLogger(__name__)

MODELS = ("MSD_musicnn", "MTT_musicnn")
BACKBONE_SOURCE = "musicnn 0.1.0 (ISC), Pons & Serra 2019"
SAMPLE_RATE = 16000
CLIP_SECONDS = 3.0
OPSET = 17
PARITY_TOLERANCE = 1e-4

INPUT_NAME = "mel"
# ONNX output name -> size of its last axis (musicnn/models.py: front end 2*204 + 3*51 = 561
# channels, mid end 3*64 more = 753; the dense back end has 200 units; 50 tags).
OUTPUT_DIMS: dict[str, int] = {"taggram": 50, "penultimate": 200, "mean_pool": 753, "max_pool": 753}

_PATCH_SHAPE = (MUSICNN_FEATURES.n_frames, MUSICNN_FEATURES.n_mels)  # (187, 96)

# Tensors of the saved training graph (names as in the .meta file).
_TF_INPUT = "model/Placeholder"  # [None, 187, 96] log-mel patches
_TF_IS_TRAINING = "model/Placeholder_2"  # bool, fed False by musicnn's extractor
# ONNX output name -> (op of the node we add, source tensor). The pooled features are
# [batch, 753, 1] in the graph (musicnn squeezes them outside the training graph).
_TF_OUTPUTS: dict[str, tuple[str, str]] = {
    "taggram": ("Identity", "model/Sigmoid"),
    "penultimate": ("Identity", "model/batch_normalization_10/batchnorm/add_1"),
    "mean_pool": ("Squeeze", "model/moments/Squeeze"),
    "max_pool": ("Squeeze", "model/Max"),
}
# Node attributes from TF 1.12 that TF 2.x rejects or that only bloat the graph.
_STRIP_ATTRS = ("_output_shapes", "_class")


# --------------------------------------------------------------------------- lazy imports


def _tf() -> Any:
    """Import TensorFlow quietly (its C++ start-up banner is noise for a converter)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    return tf


# --------------------------------------------------------------------------- checkpoints


def checkpoint_dir(model: str) -> Path:
    """Folder of a musicnn checkpoint inside the installed ``musicnn`` package.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.

    Returns
    -------
    Path
        The folder holding ``.meta``, ``.index`` and ``.data-00000-of-00001``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown musicnn backbone {model!r}; expected one of {MODELS}")
    # find_spec, not import: the package is only data plus TF code we cannot run anyway.
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("musicnn is not installed: pip install --no-deps musicnn==0.1.0")
    folder = Path(list(spec.submodule_search_locations)[0]) / model
    if not (folder / ".meta").is_file():
        raise FileNotFoundError(f"no musicnn checkpoint at {folder}")
    return folder


def musicnn_tags(model: str) -> list[str]:
    """The 50 tag names of a musicnn backbone, in output order (``musicnn/configuration.py``)."""
    if model not in MODELS:
        raise ValueError(f"unknown musicnn backbone {model!r}; expected one of {MODELS}")
    config = importlib.import_module("musicnn.configuration")  # plain constants, no TF
    tags = list(config.MSD_LABELS if model.startswith("MSD") else config.MTT_LABELS)
    if len(tags) != OUTPUT_DIMS["taggram"]:
        raise RuntimeError(f"musicnn lists {len(tags)} tags for {model}, expected 50")
    return tags


def _read_training_graph(folder: Path) -> "GraphDef":
    """The GraphDef of a checkpoint's MetaGraphDef, without TF-1-only node attributes."""
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString((folder / ".meta").read_bytes())
    graph = meta.graph_def
    for node in graph.node:
        for attr in _STRIP_ATTRS:
            if attr in node.attr:
                del node.attr[attr]
    return graph


# --------------------------------------------------------------------------- graph surgery


def _node_name(ref: str) -> str:
    """Node name of an input reference (``^ctrl``, ``name``, ``name:1``)."""
    return ref.lstrip("^").split(":")[0]


def _tensor(ref: str) -> str:
    """Canonical tensor name of a data input (``name`` -> ``name:0``)."""
    return ref if ":" in ref else f"{ref}:0"


def _reachable(nodes: dict[str, "NodeDef"], outputs: Iterable[str]) -> list[str]:
    """Nodes the outputs depend on (data and control inputs), in topological order."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in outputs:
        stack = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name):
                continue
            if name not in nodes:
                raise KeyError(f"the musicnn graph has no node {name!r}")
            state[name] = 1
            stack.append((name, True))
            for ref in nodes[name].input:
                if not state.get(_node_name(ref)):
                    stack.append((_node_name(ref), False))
    return order


def _fold_constant_cond(
    nodes: dict[str, "NodeDef"], outputs: list[str], pred: str, value: bool
) -> list["NodeDef"]:
    """Resolve TF-1 ``tf.cond`` Switch/Merge nodes whose predicate is a known constant.

    A Switch forwards its data to the taken port and makes the other port *dead*; deadness
    propagates through every op (data and control inputs) except Merge, which forwards its
    single live input. Here we do that statically, so the result has no control flow that
    tf2onnx would turn into ``If`` nodes, and no dropout or batch-statistics branch.

    Parameters
    ----------
    nodes : dict of str to NodeDef
        The graph, by node name.
    outputs : list of str
        Names of the nodes to keep.
    pred : str
        Name of the boolean node every Switch predicate derives from.
    value : bool
        Its constant value.

    Returns
    -------
    list of NodeDef
        Copies of the live nodes, rewired past Switch/Merge, without control inputs
        (the inference graph has no side effects that would need them).
    """
    known: dict[str, bool] = {f"{pred}:0": value}  # tensors with a constant bool value
    alias: dict[str, str] = {}  # tensor -> the tensor it forwards
    dead_tensors: set[str] = set()
    dead_nodes: set[str] = set()

    def resolve(ref: str) -> str:
        t = _tensor(ref)
        while t in alias:
            t = alias[t]
        return t

    def is_dead(ref: str) -> bool:
        if ref.startswith("^"):
            return _node_name(ref) in dead_nodes
        t = resolve(ref)
        return t in dead_tensors or _node_name(t) in dead_nodes

    order = _reachable(nodes, outputs)
    for name in order:
        node = nodes[name]
        data = [ref for ref in node.input if not ref.startswith("^")]
        if node.op == "Switch":
            if is_dead(data[0]) or is_dead(data[1]):
                dead_nodes.add(name)
                continue
            p = resolve(data[1])
            if p not in known:
                raise ValueError(f"Switch {name!r} has a predicate that is not constant: {p!r}")
            taken = int(known[p])
            alias[f"{name}:{taken}"] = resolve(data[0])
            dead_tensors.add(f"{name}:{1 - taken}")
        elif node.op == "Merge":
            live = [resolve(ref) for ref in data if not is_dead(ref)]
            if len(live) > 1:
                raise ValueError(f"Merge {name!r} has {len(live)} live inputs after folding")
            if live:
                alias[f"{name}:0"] = live[0]
            else:
                dead_nodes.add(name)
        elif any(is_dead(ref) for ref in node.input):
            dead_nodes.add(name)
        elif node.op == "Identity" and resolve(data[0]) in known:
            known[f"{name}:0"] = known[resolve(data[0])]

    kept = []
    for name in order:
        node = nodes[name]
        if name in dead_nodes or node.op in ("Switch", "Merge"):
            continue
        copy = type(node)()
        copy.CopyFrom(node)
        del copy.input[:]
        for ref in node.input:
            if ref.startswith("^"):
                continue
            src = resolve(ref)
            if nodes[_node_name(src)].op in ("Switch", "Merge"):
                raise ValueError(f"{name!r} still reads control-flow output {src!r}")
            copy.input.append(src)
        kept.append(copy)
    for out in outputs:
        if out in dead_nodes:
            raise ValueError(f"output {out!r} is dead with is_training={value}")
    return kept


def _rename_node(nodes: list["NodeDef"], old: str, new: str) -> None:
    """Rename node ``old`` to ``new`` and every reference to it, in place."""
    for node in nodes:
        if node.name == old:
            node.name = new
        for i, ref in enumerate(node.input):
            if _node_name(ref) == old:
                node.input[i] = ref.replace(old, new, 1)


def _output_nodes(tf: Any) -> list["NodeDef"]:
    """NodeDefs that expose the musicnn tensors under our ONNX output names."""
    from tensorflow.core.framework.node_def_pb2 import NodeDef

    out = []
    for name, (op, src) in _TF_OUTPUTS.items():
        node = NodeDef(name=name, op=op, input=[src])
        node.attr["T"].type = tf.float32.as_datatype_enum
        if op == "Squeeze":
            node.attr["squeeze_dims"].list.i.append(2)  # [batch, 753, 1] -> [batch, 753]
        out.append(node)
    return out


def frozen_graph_def(model: str = "MSD_musicnn", *, fold: bool = True) -> "GraphDef":
    """Inference GraphDef of a musicnn checkpoint with its variables as constants.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    fold : bool
        Resolve the ``is_training`` Switch/Merge pairs statically (what we convert). With
        ``False`` the TF-1 control flow stays in, driven by a constant ``False``: a graph
        only TensorFlow runs, useful to check that folding changed nothing.

    Returns
    -------
    GraphDef
        Input placeholder ``mel`` ``[None, 187, 96]``; output nodes ``taggram``,
        ``penultimate``, ``mean_pool``, ``max_pool`` (see :data:`OUTPUT_DIMS`).
    """
    tf = _tf()
    folder = checkpoint_dir(model)
    graph = _read_training_graph(folder)
    nodes = {n.name: n for n in graph.node}
    for name, (_, src) in _TF_OUTPUTS.items():
        if _node_name(src) not in nodes:
            raise KeyError(f"{model}: the checkpoint graph has no tensor {src!r} for {name}")
    for node in _output_nodes(tf):
        nodes[node.name] = node

    # is_training -> constant False (the placeholder has unknown rank; a scalar suits Switch).
    flag = nodes[_TF_IS_TRAINING]
    flag.op = "Const"
    flag.attr.clear()
    flag.attr["dtype"].type = tf.bool.as_datatype_enum
    flag.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(False, dtype=tf.bool))

    outputs = list(_TF_OUTPUTS)
    if fold:
        kept = _fold_constant_cond(nodes, outputs, _TF_IS_TRAINING, False)
    else:
        kept = [nodes[name] for name in _reachable(nodes, outputs)]

    reader = tf.compat.v1.train.NewCheckpointReader(str(folder) + "/")
    n_params = 0
    for node in kept:
        if node.op in ("VariableV2", "Variable", "VarHandleOp"):
            value = reader.get_tensor(node.name)
            n_params += value.size
            dtype = node.attr["dtype"].type
            node.op = "Const"
            node.attr.clear()
            node.attr["dtype"].type = dtype
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        elif fold and node.op in ("Assign", "AssignSub", "ApplyAdam", "RandomUniform"):
            raise ValueError(f"training op {node.name!r} ({node.op}) left in the inference graph")
    _rename_node(kept, _TF_INPUT, INPUT_NAME)

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph.versions)
    out.library.CopyFrom(graph.library)
    out.node.extend(kept)
    logger.debug("%s: %d inference nodes, %d parameters (fold=%s)",
                 model, len(kept), n_params, fold)
    return out


# --------------------------------------------------------------------------- running


def run_frozen_graph(graph_def: "GraphDef", mel: np.ndarray) -> dict[str, np.ndarray]:
    """Run a :func:`frozen_graph_def` graph in TensorFlow.

    Parameters
    ----------
    graph_def : GraphDef
        A graph from :func:`frozen_graph_def`.
    mel : np.ndarray [shape=(n, 187, 96)]
        Log-mel patches.

    Returns
    -------
    dict of str to np.ndarray
        One array per name in :data:`OUTPUT_DIMS`.
    """
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    fetches = [f"{name}:0" for name in OUTPUT_DIMS]
    with tf.compat.v1.Session(graph=graph) as sess:
        values = sess.run(fetches, feed_dict={f"{INPUT_NAME}:0": np.asarray(mel, np.float32)})
    return dict(zip(OUTPUT_DIMS, values))


def _ort_session(onnx_path: Path | str, threads: int | None = None, level: Any = None) -> Any:
    """An onnxruntime CPU session (graph optimisation ORT_ENABLE_ALL unless told)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if level is None:
        level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.graph_optimization_level = level
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def run_onnx(
    onnx_path: Path | str, mel: np.ndarray, threads: int | None = None
) -> dict[str, np.ndarray]:
    """Run a converted backbone with onnxruntime on CPU; returns every output by name."""
    sess = _ort_session(onnx_path, threads)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {INPUT_NAME: np.asarray(mel, np.float32)})
    return dict(zip(names, values))


def parity_diffs(
    ref: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> dict[str, tuple[float, float]]:
    """Per-output ``(max |ref - got|, that divided by max(1, max |ref|))``.

    The scaled figure is the absolute difference for outputs within [-1, 1] (the taggram)
    and a relative one for the unnormalised features: ``max_pool`` reaches ~90, where one
    float32 ulp is ~8e-6 and a different (equally valid) summation order in a conv moves
    the result by 1e-4 and more after batch norm scales of up to ~40.

    Returns
    -------
    dict of str to (float, float)
        ``inf`` for a missing, misshapen or non-finite output.
    """
    diffs = {}
    for name, expected in ref.items():
        actual = got.get(name)
        if actual is None or actual.shape != expected.shape:
            diffs[name] = (float("inf"), float("inf"))
            continue
        expected = expected.astype(np.float64)
        raw = float(np.max(np.abs(expected - actual), initial=0.0))
        if not np.isfinite(raw):
            raw = float("inf")
        diffs[name] = (raw, raw / max(1.0, float(np.max(np.abs(expected), initial=0.0))))
    return diffs


def check_parity(
    model: str, onnx_path: Path | str, mel_batch: np.ndarray, *, graph_def: "GraphDef | None" = None
) -> float:
    """Largest difference between TensorFlow and onnxruntime over all outputs.

    TensorFlow runs the frozen graph (:func:`frozen_graph_def`), onnxruntime the ONNX file
    with ORT_ENABLE_ALL, both on CPU.

    Parameters
    ----------
    model : str
        The musicnn backbone the ONNX file was converted from.
    onnx_path : Path or str
        The converted model.
    mel_batch : np.ndarray [shape=(n, 187, 96)]
        Log-mel patches of real(-ish) audio; zeros would hide most errors.
    graph_def : GraphDef, optional
        The frozen graph, when the caller already has it (saves re-reading the checkpoint).

    Returns
    -------
    float
        ``max |tf - onnx| / max(1, max |tf|)`` over the outputs (see :func:`parity_diffs`):
        the plain max abs diff for the taggram, relative for the large pooled features.
        ``inf`` on a missing or misshapen output or a NaN.
    """
    mel_batch = np.asarray(mel_batch, dtype=np.float32)
    if mel_batch.ndim != 3 or mel_batch.shape[1:] != _PATCH_SHAPE:
        raise ValueError(f"mel_batch must be [n, 187, 96], got {mel_batch.shape}")
    if graph_def is None:
        graph_def = frozen_graph_def(model)
    ref = run_frozen_graph(graph_def, mel_batch)
    got = run_onnx(onnx_path, mel_batch)
    diffs = parity_diffs(ref, got)
    logger.info("%s parity on %d patches (max abs diff / scaled): %s", model, len(mel_batch),
                ", ".join(f"{k} {raw:.2e}/{scaled:.2e}" for k, (raw, scaled) in diffs.items()))
    return max(scaled for _, scaled in diffs.values())


# --------------------------------------------------------------------------- test audio


def synthetic_clips(n_clips: int = 8, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Music-like 3-s test clips: tones, chords, drums, chirps and noise at several levels.

    Parameters
    ----------
    n_clips : int
        Number of clips; the kinds below repeat with fresh random parameters.
    seed : int
        Seed for the random parameters.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    np.ndarray [shape=(n_clips, 3 * sr), dtype=float32]
        Clips in [-1, 1]; some near full scale, where musicnn's float16 mel overflowed.
    """
    rng = np.random.default_rng(seed)
    n = int(CLIP_SECONDS * sr)
    t = np.arange(n) / sr
    clips = np.zeros((n_clips, n), dtype=np.float64)

    def drums() -> np.ndarray:
        y = np.zeros(n)
        beat = int(sr * 60 / rng.uniform(80, 160))
        for start in range(0, n, beat):
            m = min(n - start, sr // 4)
            tt = np.arange(m) / sr
            kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-tt * 30)) * tt)
            y[start:start + m] += kick * np.exp(-tt * 12)
            hat = start + beat // 2
            if hat < n:
                k = min(n - hat, sr // 20)
                y[hat:hat + k] += 0.3 * rng.standard_normal(k) * np.exp(-np.arange(k) / (sr * 0.01))
        return y

    for i in range(n_clips):
        kind = i % 6
        f0 = rng.uniform(80, 800)
        if kind == 0:  # harmonic tone with vibrato
            phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / sr
            y = sum(np.sin(k * phase) / k for k in range(1, 8))
        elif kind == 1:  # major chord with tremolo
            y = sum(np.sin(2 * np.pi * f0 * r * t) for r in (1, 1.26, 1.5))
            y *= 1 + 0.5 * np.sin(2 * np.pi * 3 * t)
        elif kind == 2:  # drums
            y = drums()
        elif kind == 3:  # chirp
            y = np.sin(2 * np.pi * (f0 * t + rng.uniform(200, 2000) * t**2 / (2 * CLIP_SECONDS)))
        elif kind == 4:  # brownish noise
            y = np.cumsum(rng.standard_normal(n))
            y -= np.convolve(y, np.ones(401) / 401, mode="same")
        else:  # drums under a bass line and a melody
            notes = f0 * 2 ** (rng.integers(0, 12, size=12) / 12)
            melody = np.sin(2 * np.pi * np.cumsum(np.repeat(notes, -(-n // 12))[:n]) / sr)
            y = drums() + 0.5 * melody + 0.5 * np.sin(2 * np.pi * f0 / 4 * t)
        y = y / (np.max(np.abs(y)) + 1e-12)
        clips[i] = y * rng.choice([0.99, 0.5, 0.1, 0.01])
    return clips.astype(np.float32)


def parity_features(n_clips: int = 8, seed: int = 0) -> np.ndarray:
    """Log-mel patches ``[n_clips, 187, 96]`` of :func:`synthetic_clips`, as the tagger
    computes them."""
    return log_mel(synthetic_clips(n_clips, seed), SAMPLE_RATE, MUSICNN_FEATURES)


# --------------------------------------------------------------------------- ONNX


def _set_batch_dims(model: "onnx.ModelProto") -> None:
    """Name the batch axis ``batch`` everywhere and pin the other dims of inputs and outputs."""
    graph = model.graph
    if [i.name for i in graph.input] != [INPUT_NAME]:
        raise ValueError(f"expected the single input {INPUT_NAME!r}, "
                         f"got {[i.name for i in graph.input]}")
    if [o.name for o in graph.output] != list(OUTPUT_DIMS):
        raise ValueError(f"expected outputs {list(OUTPUT_DIMS)}, "
                         f"got {[o.name for o in graph.output]}")
    shapes = {INPUT_NAME: _PATCH_SHAPE, **{k: (v,) for k, v in OUTPUT_DIMS.items()}}
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        dims.add().dim_param = "batch"
        for size in shapes[value.name]:
            dims.add().dim_value = size


def _strip(model: "onnx.ModelProto") -> None:
    """Drop doc strings, intermediate value_info, unused initializers and opset imports."""
    graph = model.graph
    model.doc_string = ""
    graph.doc_string = ""
    for node in graph.node:
        node.doc_string = ""
    del graph.value_info[:]
    used = {ref for node in graph.node for ref in node.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    domains = {node.domain for node in graph.node} | {""}
    opsets = [op for op in model.opset_import if op.domain in domains]  # tf2onnx adds ai.onnx.ml
    del model.opset_import[:]
    model.opset_import.extend(opsets)


def _attr(node: "onnx.NodeProto", name: str, default: Any = None) -> Any:
    """Value of a node attribute, or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _pool_before_batchnorm(model: "onnx.ModelProto", pad_channels: int = 16) -> int:
    """Max-pool the front-end conv outputs *before* their ReLU and batch norm.

    musicnn's front end is ``Conv -> Relu -> BatchNorm -> MaxPool`` where the pool spans the
    whole frequency axis, so ReLU and batch norm run on maps 30-96 times larger than
    needed. Per channel ``relu`` then ``bn(y) = a*y + c`` is monotone (increasing for
    ``a >= 0``, decreasing for ``a < 0``), and a max pool commutes with an increasing map;
    for a decreasing one it becomes a min pool, which is a max pool of the negated input.
    So with ``s = sign(gamma)`` (the sign of ``a``) we negate those channels' conv weights
    and bias, pool, multiply back by ``s``, then apply ReLU and batch norm to the pooled map:
    ``Conv(s*W, s*b) -> MaxPool -> Mul(s) -> Relu -> BatchNorm``. Negation commutes with
    rounding and rounded monotone maps stay monotone, so this is exact in floating point
    too: bit for bit with onnxruntime's plain kernels (ORT_DISABLE_ALL); with ORT_ENABLE_ALL
    the conv is fused differently and results move by float32 rounding only.

    Parameters
    ----------
    model : onnx.ModelProto
        Rewritten in place.
    pad_channels : int
        Round the rewritten convs' output channels up to a multiple of this (extra zero
        filters, sliced off after the pool); 1 disables.

    Returns
    -------
    int
        Number of rewritten Conv/Relu/BatchNorm/MaxPool chains.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for ref in node.input:
            consumers.setdefault(ref, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    def only_feeds(node: "onnx.NodeProto", op: str) -> bool:
        out = node.output[0]
        users = consumers.get(out, [])
        return out not in graph_outputs and len(users) == 1 and users[0].op_type == op

    rewritten = 0
    for pool in list(graph.node):
        if pool.op_type != "MaxPool" or len(pool.output) != 1:
            continue
        if any(_attr(pool, "pads", [0])) or any(d != 1 for d in _attr(pool, "dilations", [1])) \
                or _attr(pool, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            continue
        chain_ops = ("Conv", "Relu", "BatchNormalization")  # walked back from the pool
        found, ref = [], pool.input[0]
        for op in reversed(chain_ops):
            node = producer.get(ref)
            if node is None or node.op_type != op:
                break
            found.append(node)
            ref = node.input[0]
        if len(found) != 3:
            continue
        bn, relu, conv = found
        if not (only_feeds(conv, "Relu") and only_feeds(relu, "BatchNormalization")
                and only_feeds(bn, "MaxPool") and len(bn.output) == 1):
            continue
        if not all(ref in inits for ref in [*bn.input[1:], *conv.input[1:]]):
            continue
        if _attr(bn, "training_mode", 0):
            continue

        sign = np.where(numpy_helper.to_array(inits[bn.input[1]]) < 0, -1.0, 1.0).astype(np.float32)
        channels = len(sign)
        # Zero filters up to a multiple of 16 channels: onnxruntime then keeps the pool in its
        # blocked NCHWc layout and reorders only the pooled map (a channel count that is not
        # a multiple of the SIMD block makes it reorder the full conv output instead).
        padded = channels
        if _attr(conv, "group", 1) == 1:  # grouped convs would need whole extra groups
            padded = -(-channels // pad_channels) * pad_channels
        weight = numpy_helper.to_array(inits[conv.input[1]])
        per_channel = (-1, *([1] * (weight.ndim - 2)))  # broadcasts over [N, C, spatial...]
        weight = weight * sign.reshape(-1, *per_channel[1:], 1)
        extra = np.zeros((padded - channels, *weight.shape[1:]), weight.dtype)
        weight = np.concatenate([weight, extra])
        new_w = numpy_helper.from_array(weight, f"{conv.input[1]}__signed")
        graph.initializer.append(new_w)
        conv.input[1] = new_w.name
        if len(conv.input) > 2 and conv.input[2]:
            bias = numpy_helper.to_array(inits[conv.input[2]]) * sign
            bias = np.concatenate([bias, np.zeros(padded - channels, bias.dtype)])
            new_b = numpy_helper.from_array(bias, f"{conv.input[2]}__signed")
            graph.initializer.append(new_b)
            conv.input[2] = new_b.name

        base = pool.name or pool.output[0]
        pooled = f"{base}__pooled"
        pool_attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        chain = [helper.make_node("MaxPool", [conv.output[0]], [pooled], name=f"{base}__first",
                                  **pool_attrs)]
        if padded != channels:
            consts = {k: numpy_helper.from_array(np.array(v, np.int64), f"{base}__slice_{k}")
                      for k, v in (("starts", [0]), ("ends", [channels]), ("axes", [1]))}
            graph.initializer.extend(consts.values())
            chain.append(helper.make_node("Slice", [pooled] + [c.name for c in consts.values()],
                                          [f"{base}__sliced"], name=f"{base}__slice"))
            pooled = f"{base}__sliced"
        if (sign < 0).any():
            s_init = numpy_helper.from_array(sign.reshape(per_channel), f"{base}__sign")
            graph.initializer.append(s_init)
            chain.append(helper.make_node("Mul", [pooled, s_init.name], [f"{base}__signed"],
                                          name=f"{base}__sign"))
            pooled = f"{base}__signed"
        chain.append(helper.make_node("Relu", [pooled], [f"{base}__relu"], name=relu.name))
        bn_attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
        chain.append(helper.make_node("BatchNormalization", [f"{base}__relu", *bn.input[1:]],
                                      [pool.output[0]], name=bn.name, **bn_attrs))
        at = list(graph.node).index(pool)
        for old in (relu, bn, pool):
            graph.node.remove(old)
        at -= 2  # relu and bn came before the pool
        for offset, node in enumerate(chain):
            graph.node.insert(at + offset, node)
        rewritten += 1
    return rewritten


def _metadata(model: str) -> dict[str, str]:
    """The ``genreml.*`` metadata_props of a converted backbone."""
    return {
        "genreml.backbone": model,
        "genreml.backbone_source": BACKBONE_SOURCE,
        "genreml.tags": json.dumps(musicnn_tags(model)),
        "genreml.features": MUSICNN_FEATURES.to_json(),
        "genreml.sample_rate": str(SAMPLE_RATE),
        "genreml.clip_seconds": str(CLIP_SECONDS),
    }


def _to_onnx(graph_def: "GraphDef", model: str) -> "onnx.ModelProto":
    """tf2onnx conversion of a frozen graph, with our names, dims and metadata."""
    import onnx
    import tf2onnx

    _tf()
    renames = {f"{INPUT_NAME}:0": INPUT_NAME, **{f"{k}:0": k for k in OUTPUT_DIMS}}
    proto, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        name=f"genreml_{model}",
        input_names=[f"{INPUT_NAME}:0"],
        output_names=[f"{k}:0" for k in OUTPUT_DIMS],
        opset=OPSET,
        tensors_to_rename=renames,
    )
    _set_batch_dims(proto)
    n_pools = _pool_before_batchnorm(proto)
    logger.debug("%s: moved %d front-end max pools before their ReLU and batch norm",
                 model, n_pools)
    _strip(proto)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, _metadata(model))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def convert_backbone(
    model: str = "MSD_musicnn",
    out_path: Path | str | None = None,
    *,
    mel_batch: np.ndarray | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> Path:
    """Convert a musicnn checkpoint to ONNX and check it against TensorFlow.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    out_path : Path or str, optional
        Where to write the ONNX file (default ``runs/<model>.onnx`` under the working
        directory). Nothing is written there unless the parity check passes.
    mel_batch : np.ndarray [shape=(n, 187, 96)], optional
        Patches for the parity check (default :func:`parity_features`).
    tolerance : float
        Largest allowed :func:`check_parity` figure: max abs diff for the taggram, scaled
        by the output's magnitude for the larger features.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    RuntimeError
        When the ONNX outputs differ from TensorFlow's by more than ``tolerance``.
    """
    import onnx

    start = time.perf_counter()
    out_path = Path(out_path) if out_path is not None else Path("runs") / f"{model}.onnx"
    graph_def = frozen_graph_def(model)
    proto = _to_onnx(graph_def, model)

    # Write next to the target and move into place only once parity holds.
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    onnx.save(proto, tmp)
    try:
        mel = parity_features() if mel_batch is None else mel_batch
        diff = check_parity(model, tmp, mel, graph_def=graph_def)
        if not diff <= tolerance:  # also catches NaN
            raise RuntimeError(
                f"{model}: ONNX differs from TensorFlow by {diff:.3g} > {tolerance:g}")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("%s -> %s (%.2f MB, parity %.2e, %.1f s)", model, out_path,
                out_path.stat().st_size / 1e6, diff, time.perf_counter() - start)
    return out_path


def stack_backbones(paths: Sequence[Path | str], out_path: Path | str) -> Path:
    """Run several converted backbones side by side as one ONNX graph.

    The models share the input ``mel``; each output name of the first model becomes the
    concatenation (last axis) of that output over all models, in the given order. Used to
    train heads on MSD and MTT embeddings together with one backbone file.

    Parameters
    ----------
    paths : sequence of path
        Backbones from :func:`convert_backbone`, with the same input and output names.
    out_path : path
        Where to write the stacked model.

    Returns
    -------
    Path
        ``out_path``.
    """
    import onnx
    from onnx import compose, helper

    models = [onnx.load(str(p)) for p in paths]
    outputs = [o.name for o in models[0].graph.output]
    nodes, inits = [], []
    for i, m in enumerate(models):
        prefix = f"b{i}/"
        m = compose.add_prefix(m, prefix)
        for node in m.graph.node:  # the shared input keeps its name
            node.input[:] = [INPUT_NAME if x == prefix + INPUT_NAME else x for x in node.input]
        nodes += m.graph.node
        inits += m.graph.initializer
    concat_outputs = []
    for name in outputs:
        nodes.append(helper.make_node("Concat", [f"b{i}/{name}" for i in range(len(models))],
                                      [name], axis=-1))
        width = OUTPUT_DIMS[name] * len(models)
        concat_outputs.append(helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, ["batch", width]))
    graph = helper.make_graph(nodes, "genreml_stacked_backbones",
                              [models[0].graph.input[0]], concat_outputs, inits)
    stacked = helper.make_model(graph, opset_imports=models[0].opset_import)
    stacked.ir_version = models[0].ir_version
    meta = {e.key: e.value for e in models[0].metadata_props}
    meta["genreml.backbone"] = "+".join(
        {e.key: e.value for e in m.metadata_props}.get("genreml.backbone", f"b{i}")
        for i, m in enumerate(models))
    meta.pop("genreml.tags", None)
    onnx.helper.set_model_props(stacked, meta)
    onnx.checker.check_model(stacked)
    out_path = Path(out_path)
    onnx.save(stacked, out_path)
    return out_path


def time_per_clip(
    onnx_path: Path | str, batch: int = 32, threads: int = 2, repeats: int = 10, level: Any = None
) -> float:
    """Median onnxruntime CPU time per 3-s clip, in milliseconds.

    Parameters
    ----------
    onnx_path : Path or str
        A converted backbone.
    batch : int
        Patches per ``run`` call.
    threads : int
        ``intra_op_num_threads``.
    repeats : int
        Timed runs (after two warm-up runs).
    level : onnxruntime.GraphOptimizationLevel, optional
        Graph optimisation level (default ORT_ENABLE_ALL).

    Returns
    -------
    float
        Median wall-clock milliseconds of one ``run`` divided by ``batch``.
    """
    sess = _ort_session(onnx_path, threads, level)
    mel = np.resize(parity_features(), (batch, *_PATCH_SHAPE))
    for _ in range(2):
        sess.run(None, {INPUT_NAME: mel})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {INPUT_NAME: mel})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0 / batch


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.musicnn --model MSD_musicnn --out PATH [--benchmark]``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.musicnn",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="MSD_musicnn")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                        help="largest allowed check_parity figure (default %(default)g)")
    parser.add_argument("--benchmark", action="store_true",
                        help="also time onnxruntime per clip (batch 32, 2 threads)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:  # ours only: third-party loggers flood DEBUG
        logger.setLevel(logging.DEBUG)
    path = convert_backbone(args.model, args.out, tolerance=args.tolerance)
    if args.benchmark:
        logger.info("%s: %.2f ms per 3-s clip (onnxruntime CPU, batch 32, 2 threads)",
                    args.model, time_per_clip(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
