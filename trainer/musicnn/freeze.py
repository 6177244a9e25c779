"""Freeze a musicnn TF-1 checkpoint into an inference graph, and run it in TensorFlow.

``musicnn==0.1.0`` ships TF-1.12 checkpoints whose ``.meta`` file holds the *training* graph:
optimizer slots, gradients, and a TF-1 ``tf.cond`` (Switch/Merge) on an ``is_training``
placeholder around every batch norm and dropout. ``import_meta_graph`` does not load it under
TF 2.x, and the layer code in ``musicnn/models.py`` (``tf.compat.v1.layers``) no longer exists
with Keras 3, so we work on the protobuf directly (steps 1-4 of :mod:`trainer.musicnn`). The
frozen graph is both what tf2onnx converts and the reference the ONNX file is checked against.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from .checkpoint import INPUT_NAME, OUTPUT_DIMS, checkpoint_dir, import_tf

if TYPE_CHECKING:  # pragma: no cover
    from tensorflow.core.framework.graph_pb2 import GraphDef
    from tensorflow.core.framework.node_def_pb2 import NodeDef

__all__ = ["frozen_graph_def", "run_frozen_graph"]

logger = logging.getLogger(__name__)

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
    tf = import_tf()
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
    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    fetches = [f"{name}:0" for name in OUTPUT_DIMS]
    with tf.compat.v1.Session(graph=graph) as sess:
        values = sess.run(fetches, feed_dict={f"{INPUT_NAME}:0": np.asarray(mel, np.float32)})
    return dict(zip(OUTPUT_DIMS, values))
