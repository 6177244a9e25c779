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
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

__all__ = ["PARITY_TOLERANCE", "backbone_parity", "check_backbone_parity", "optimize_backbone",
           "quantize_front_end"]

# Largest max abs embedding difference we accept (the trainer's export parity figure).
PARITY_TOLERANCE = 1e-4

# Ops that only move data (no arithmetic): chains of them collapse to one op or none.
_MOVEMENT = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
# Batch sizes a movement chain is simulated with (two, to tell the batch axis from others).
_SIM_BATCHES = (2, 3)


# --------------------------------------------------------------------------- graph helpers


class _Graph:
    """Indexes of a graph (producers, consumers, constants, shapes), rebuilt per pass."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for ref in node.input:
                self.consumers.setdefault(ref, []).append(node)
        self.outputs = {o.name for o in self.graph.output}
        self._shapes: dict[str, list[int | None]] | None = None
        self._serial = 0

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer, or None."""
        init = self.inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def add_const(self, value: np.ndarray, hint: str) -> str:
        """Add an initializer with a fresh name; return the name."""
        name = self.fresh(hint)
        init = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        return name

    def fresh(self, hint: str) -> str:
        """A tensor or node name not used in the graph."""
        taken = set(self.inits) | set(self.producer) | {i.name for i in self.graph.input}
        hint = re.sub(r"(__opt\d+)+", "", hint)
        while True:
            self._serial += 1
            name = f"{hint}__opt{self._serial}"
            if name not in taken:
                return name

    def only_user(self, tensor: str, node: onnx.NodeProto) -> bool:
        """``node`` is the single consumer of ``tensor``, which is no graph output."""
        users = self.consumers.get(tensor, [])
        return tensor not in self.outputs and len(users) == 1 and users[0] is node

    def shape(self, tensor: str) -> list[int | None] | None:
        """Static shape of a tensor (None for a symbolic dim), or None when unknown."""
        if self._shapes is None:
            self._shapes = _infer_shapes(self.model)
        return self._shapes.get(tensor)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer of ``old`` read ``new`` instead."""
        for node in self.consumers.get(old, []):
            node.input[:] = [new if ref == old else ref for ref in node.input]


def _infer_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of every tensor that onnx shape inference (with data propagation) knows."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    shapes: dict[str, list[int | None]] = {}
    for value in [*g.input, *g.value_info, *g.output]:
        t = value.type.tensor_type
        if t.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in t.shape.dim]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """Value of a node attribute, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _remove_dead(model: onnx.ModelProto) -> None:
    """Drop nodes nothing reads (transitively), then initializers nothing reads."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(ref for ref in node.input if ref)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _toposort(model: onnx.ModelProto) -> None:
    """Order nodes so each comes after the producers of its inputs (stable otherwise)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(ref in ready for ref in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _insert_after(graph: onnx.GraphProto, anchor: onnx.NodeProto,
                  nodes: Iterable[onnx.NodeProto]) -> None:
    at = list(graph.node).index(anchor) + 1
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)


def _bypass(g: _Graph, node: onnx.NodeProto, source: str) -> bool:
    """Remove a node whose output equals ``source``; keep a graph output's name.

    Returns False (and changes nothing) when the output is a graph output that cannot take
    over ``source``'s name (``source`` is a graph input, initializer or another output).
    """
    out = node.output[0]
    if out in g.outputs:
        producer = g.producer.get(source)
        if producer is None or source in g.outputs:
            return False
        # The graph output keeps its name: the producer writes it, other readers follow.
        producer.output[:] = [out if o == source else o for o in producer.output]
        g.replace_uses(source, out)
    else:
        g.replace_uses(out, source)
    g.graph.node.remove(node)
    return True


# --------------------------------------------------------------------------- passes


def _drop_identities(g: _Graph) -> int:
    """``Identity``, a one-input ``Concat`` and a ``Flatten`` of a 2-D tensor copy their input."""
    done = 0
    for node in list(g.graph.node):
        noop = node.op_type == "Identity" or (node.op_type == "Concat" and len(node.input) == 1)
        if node.op_type == "Flatten" and _attr(node, "axis", 1) == 1:
            shape = g.shape(node.input[0])
            noop = shape is not None and len(shape) == 2
        if noop and _bypass(g, node, node.input[0]):
            done += 1
            g = _Graph(g.model)
    return done


def _fold_batchnorm_into_conv(g: _Graph) -> int:
    """``BatchNormalization(Conv(x, W, b))`` -> ``Conv(x, a*W, a*(b - mean) + beta)``.

    Legal when the batch norm reads the conv's output alone (inference mode, constant
    statistics): it is then a per-output-channel affine map, which the conv absorbs.
    """
    done = 0
    for bn in list(g.graph.node):
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1 \
                or _attr(bn, "training_mode", 0):
            continue
        conv = g.producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or not g.only_user(conv.output[0], bn):
            continue
        params = [g.const(ref) for ref in bn.input[1:5]]
        weight = g.const(conv.input[1])
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = g.const(conv.input[2]) if has_bias else None
        if any(p is None for p in params) or weight is None or (has_bias and bias is None):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        if scale.shape != (weight.shape[0],):
            continue
        new_w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        old_b = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        new_b = (old_b - mean) * scale + beta
        conv.input[1] = g.add_const(new_w.astype(weight.dtype), conv.input[1])
        b_name = g.add_const(new_b.astype(weight.dtype), conv.input[1])
        if len(conv.input) > 2:
            conv.input[2] = b_name
        else:
            conv.input.append(b_name)
        conv.output[0] = bn.output[0]  # the conv now writes what the batch norm wrote
        g.graph.node.remove(bn)
        done += 1
        g = _Graph(g.model)
    return done


def _full_width_conv_to_1d(g: _Graph) -> int:
    """A one-channel 2-D conv whose kernel spans the input's width -> a 1-D conv.

    ``Conv(x[N, 1, H, W], w[O, 1, kh, W])`` with no padding, stride or dilation along W gives
    ``[N, O, H', 1]``: the same sums as a 1-D conv of ``x`` read as ``[N, W, H]`` (W input
    channels) with ``w`` as ``[O, W, kh]``. TensorFlow's NHWC layers become such convs in
    tf2onnx; onnxruntime runs the 1-D form as one GEMM per clip, 1.5-2x faster than its
    blocked one-channel kernel. The layout changes this adds cancel with the converter's in
    :func:`_collapse_movement`.
    """
    done = 0
    for conv in list(g.graph.node):
        if conv.op_type != "Conv" or _attr(conv, "group", 1) != 1:
            continue
        weight = g.const(conv.input[1])
        x_shape = g.shape(conv.input[0])
        if weight is None or weight.ndim != 4 or weight.shape[1] != 1 or x_shape is None:
            continue
        if len(x_shape) != 4 or x_shape[1] != 1 or x_shape[3] != weight.shape[3]:
            continue
        if any(v is None for v in x_shape[2:]):
            continue
        pads = list(_attr(conv, "pads", [0, 0, 0, 0]))
        if _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or pads[1] or pads[3]:
            continue
        if any(s != 1 for s in _attr(conv, "strides", [1, 1])) \
                or any(d != 1 for d in _attr(conv, "dilations", [1, 1])):
            continue
        _, _, height, width = x_shape
        name = conv.name or conv.output[0]
        flat = g.fresh(f"{name}/rows")
        chans = g.fresh(f"{name}/channels")
        out1d = g.fresh(f"{name}/conv1d")
        w1d = weight[:, 0].transpose(0, 2, 1)  # [O, kh, W] -> [O, W, kh]
        inputs = [chans, g.add_const(np.ascontiguousarray(w1d), conv.input[1])]
        if len(conv.input) > 2 and conv.input[2]:
            inputs.append(conv.input[2])
        new = [
            helper.make_node("Reshape", [conv.input[0], g.add_const(
                np.array([-1, height, width], np.int64), f"{name}/rows_shape")], [flat],
                name=f"{name}/rows"),
            helper.make_node("Transpose", [flat], [chans], perm=[0, 2, 1], name=f"{name}/channels"),
            helper.make_node("Conv", inputs, [out1d], name=f"{name}/conv1d",
                             kernel_shape=[int(weight.shape[2])], pads=[pads[0], pads[2]]),
            helper.make_node("Unsqueeze", [out1d, g.add_const(np.array([3], np.int64),
                             f"{name}/axes")], [conv.output[0]], name=f"{name}/width"),
        ]
        _insert_after(g.graph, conv, new)
        g.graph.node.remove(conv)
        done += 1
        g = _Graph(g.model)
    return done


# ---- movement chains


def _run_movement(node: onnx.NodeProto, x: np.ndarray, g: _Graph) -> np.ndarray | None:
    """numpy result of one movement op on ``x`` (None when its constants are unknown)."""
    op = node.op_type
    if op == "Transpose":
        perm = _attr(node, "perm")
        return np.transpose(x, perm if perm is not None else None)
    if op == "Flatten":
        axis = int(_attr(node, "axis", 1))
        axis = axis + x.ndim if axis < 0 else axis
        return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))
    axes_or_shape = g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if op == "Reshape":
        if axes_or_shape is None or _attr(node, "allowzero", 0):
            return None
        shape = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(axes_or_shape)]
        return x.reshape(shape)
    if op == "Squeeze":
        if axes_or_shape is None:
            return np.squeeze(x) if len(node.input) == 1 else None
        return np.squeeze(x, axis=tuple(int(a) for a in axes_or_shape))
    if op == "Unsqueeze":
        if axes_or_shape is None:
            return None
        axes = sorted(int(a) % (x.ndim + len(axes_or_shape)) for a in axes_or_shape)
        for a in axes:
            x = np.expand_dims(x, a)
        return x
    return None


def _movement_chain(g: _Graph, node: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]]:
    """The movement ops from the nearest tensor an arithmetic op (or the graph) produced."""
    chain = [node]
    while True:
        prev = g.producer.get(chain[0].input[0])
        if prev is None or prev.op_type not in _MOVEMENT:
            return chain[0].input[0], chain
        chain.insert(0, prev)


def _canonical_movement(g: _Graph, source: str, chain: list[onnx.NodeProto]
                        ) -> list[tuple[str, object]] | None:
    """The shortest equivalent of a movement chain: ``[]`` (identity), or a list of
    ``("reshape", shape)`` / ``("transpose", perm)`` steps; None when it cannot tell.

    The chain runs on index arrays of ``source``'s shape for two batch sizes; the steps found
    must reproduce both results exactly.
    """
    shape = g.shape(source)
    if shape is None or not shape or any(d is None for d in shape[1:]):
        return None
    results = []
    for batch in _SIM_BATCHES:
        full = [batch if shape[0] is None else shape[0], *shape[1:]]
        x = np.arange(int(np.prod(full))).reshape(full)
        y = x
        for node in chain:
            try:
                y = _run_movement(node, y, g)
            except ValueError:  # a shape that holds for one batch size only
                return None
            if y is None:
                return None
        results.append((x, y))

    def target(dims: Callable[[np.ndarray], tuple[int, ...]]) -> list[int] | None:
        """A Reshape shape valid for every batch size: the one dim that varies becomes -1."""
        a, b = (dims(y) for _, y in results)
        if len(a) != len(b):
            return None
        varying = [i for i, (p, q) in enumerate(zip(a, b)) if p != q]
        if len(varying) > 1:
            return None
        return [-1 if i in varying else int(d) for i, d in enumerate(a)]

    def matches(steps: list[tuple[str, object]]) -> bool:
        for x, y in results:
            z = x
            for kind, arg in steps:
                z = np.transpose(z, arg) if kind == "transpose" else z.reshape(arg)
            if z.shape != y.shape or not np.array_equal(z, y):
                return False
        return True

    out_shape = target(lambda y: y.shape)
    if out_shape is None:
        return None
    x0, y0 = results[0]
    if all(y.shape == x.shape and np.array_equal(x, y) for x, y in results):
        return []
    if matches([("reshape", out_shape)]):
        return [("reshape", out_shape)]
    rank = x0.ndim
    if y0.ndim == rank:
        for perm in itertools.permutations(range(rank)):
            if matches([("transpose", list(perm))]):
                return [("transpose", list(perm))]
    # Unit dims out, the others permuted, then the output shape.
    core = [i for i, d in enumerate(x0.shape) if d != 1 or (i == 0 and shape[0] is None)]
    if len(core) > 6:
        return None
    squeezed = [-1 if (i == 0 and shape[0] is None) else int(x0.shape[i]) for i in core]
    for perm in itertools.permutations(range(len(core))):
        if list(perm) == sorted(perm):
            continue
        steps: list[tuple[str, object]] = []
        if len(core) != rank:
            steps.append(("reshape", squeezed))
        steps.append(("transpose", list(perm)))
        permuted = [squeezed[p] for p in perm]
        if permuted != out_shape:
            steps.append(("reshape", out_shape))
        if matches(steps):
            return steps
    return None


def _collapse_movement(g: _Graph) -> int:
    """Replace a chain of Transpose/Reshape/Squeeze/Unsqueeze/Flatten by its shortest
    equivalent (one Reshape, one Transpose, or nothing) when that has fewer Transposes, or
    as many Transposes and fewer ops."""
    done = 0
    for node in list(g.graph.node):
        if node.op_type not in _MOVEMENT or node not in g.graph.node:
            continue
        source, chain = _movement_chain(g, node)
        if len(chain) == 1 and node.op_type != "Transpose":
            continue
        steps = _canonical_movement(g, source, chain)
        if steps is None:
            continue
        old_t = sum(n.op_type == "Transpose" for n in chain)
        new_t = sum(kind == "transpose" for kind, _ in steps)
        if not (new_t < old_t or (new_t == old_t and len(steps) < len(chain))):
            continue
        if not steps:
            if not _bypass(g, node, source):
                continue
        else:
            name = node.name or node.output[0]
            ref = source
            new = []
            for i, (kind, arg) in enumerate(steps):
                out = node.output[0] if i == len(steps) - 1 else g.fresh(f"{name}/step")
                if kind == "transpose":
                    new.append(helper.make_node("Transpose", [ref], [out], perm=arg,
                                                name=g.fresh(f"{name}/transpose")))
                else:
                    shape = g.add_const(np.array(arg, np.int64), f"{name}/shape")
                    new.append(helper.make_node("Reshape", [ref, shape], [out],
                                                name=g.fresh(f"{name}/reshape")))
                ref = out
            _insert_after(g.graph, node, new)
            g.graph.node.remove(node)
        done += 1
        _remove_dead(g.model)
        g = _Graph(g.model)
    return done


# ---- transposes moved down, past the ops that do not care about layout


def _transpose_input(g: _Graph, ref: str) -> list[int] | None:
    """The perm of the Transpose producing ``ref``, or None."""
    node = g.producer.get(ref)
    if node is None or node.op_type != "Transpose":
        return None
    perm = _attr(node, "perm")
    return list(perm) if perm is not None else None


def _sink_transposes(g: _Graph) -> int:
    """``op(Transpose(x), ...)`` -> ``Transpose(op(x, ...))`` for ops that commute with it.

    Covered: unary elementwise ops, a binary elementwise op whose inputs are all transposed
    alike, a Concat of inputs transposed alike (its axis mapped back), and ReduceMean/Max
    and Squeeze (axes mapped back; the transpose after them loses the reduced axes). Moved
    down, transposes meet and cancel (:func:`_collapse_movement`) or end at a reduction.
    """
    unary = {"Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt"}
    binary = {"Add", "Sub", "Mul", "Div", "Max", "Min"}
    done = 0
    for node in list(g.graph.node):
        op = node.op_type
        perms = [_transpose_input(g, ref) for ref in node.input]
        if not perms or perms[0] is None:
            continue
        perm = perms[0]
        new_attrs = _attrs(node)
        inputs = [g.producer[ref].input[0] for ref in node.input[:1]]
        out_perm = perm
        if op in unary:
            pass
        elif op in binary or op == "Concat":
            if len(node.input) < 2 or any(p != perm for p in perms):
                continue
            inputs = [g.producer[ref].input[0] for ref in node.input]
            if op == "Concat":
                new_attrs["axis"] = perm[int(new_attrs["axis"]) % len(perm)]
        elif op in ("ReduceMean", "ReduceMax", "Squeeze"):
            if op == "Squeeze":
                axes = g.const(node.input[1]) if len(node.input) > 1 else None
                keep = False
            else:
                axes = np.array(new_attrs.get("axes", []))
                keep = bool(new_attrs.get("keepdims", 1))
            if axes is None or len(axes) == 0:
                continue
            axes = [int(a) % len(perm) for a in axes]
            mapped = sorted(perm[a] for a in axes)
            if op == "Squeeze":
                inputs.append(g.add_const(np.array(mapped, np.int64), f"{node.name}/axes"))
            else:
                new_attrs["axes"] = mapped
            if not keep:
                # The result's axes are the input's minus the reduced ones, in perm's order.
                rest = [p for i, p in enumerate(perm) if i not in axes]
                out_perm = [sorted(rest).index(p) for p in rest]
        else:
            continue
        name = node.name or node.output[0]
        inner = g.fresh(f"{name}/untransposed")
        moved = [helper.make_node(op, inputs, [inner], name=g.fresh(name), **new_attrs)]
        if out_perm == sorted(out_perm):
            moved[0].output[0] = node.output[0]
        else:
            moved.append(helper.make_node("Transpose", [inner], [node.output[0]], perm=out_perm,
                                          name=g.fresh(f"{name}/transpose")))
        _insert_after(g.graph, node, moved)
        g.graph.node.remove(node)
        _remove_dead(g.model)
        _toposort(g.model)
        g = _Graph(g.model)
        done += 1
    return done


def _sink_unsqueeze(g: _Graph) -> int:
    """``op(Unsqueeze(x, axes))`` -> ``Unsqueeze(op(x), axes)`` for elementwise ops and a
    batch norm (whose channel axis stays axis 1).

    :func:`_full_width_conv_to_1d` leaves an Unsqueeze right after each 1-D conv; moved past
    the Relu, it lets onnxruntime fuse the conv and its activation again.
    """
    unary = {"Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt"}
    binary = {"Add", "Sub", "Mul", "Div", "Max", "Min"}
    done = 0
    for node in list(g.graph.node):
        op = node.op_type
        if op not in unary | binary | {"BatchNormalization"} or len(node.output) != 1:
            continue
        data = node.input[:2] if op in binary else node.input[:1]
        sources = [g.producer.get(ref) for ref in data]
        if any(s is None or s.op_type != "Unsqueeze" or len(s.input) < 2 for s in sources):
            continue
        axes = [g.const(s.input[1]) for s in sources]
        if any(a is None for a in axes):
            continue
        shapes = [g.shape(ref) for ref in data]
        if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
            continue
        rank = len(shapes[0])
        norm = [sorted(int(a) % rank for a in ax) for ax in axes]
        if any(n != norm[0] for n in norm) or (op == "BatchNormalization" and min(norm[0]) < 2):
            continue
        name = node.name or node.output[0]
        inner = g.fresh(f"{name}/squeezed")
        moved = helper.make_node(op, [s.input[0] for s in sources] + list(node.input[len(data):]),
                                 [inner], name=g.fresh(name), **_attrs(node))
        unsq = helper.make_node("Unsqueeze", [inner, sources[0].input[1]], [node.output[0]],
                                name=g.fresh(f"{name}/unsqueeze"))
        _insert_after(g.graph, node, [moved, unsq])
        g.graph.node.remove(node)
        _remove_dead(g.model)
        _toposort(g.model)
        g = _Graph(g.model)
        done += 1
    return done


def _reduce_unit_tail(g: _Graph) -> int:
    """Reduce over the size-1 axes after the reduced ones as well.

    Reducing a size-1 axis changes no value, but onnxruntime's ReduceMean over a middle axis
    (``[N, C, T, 1]``, axis 2) takes a generic path 30-60x slower than over the trailing
    axes (2 and 3): 0.7 ms per clip for musicnn's time pooling. With ``keepdims=0`` an
    Unsqueeze puts the dropped unit axes back. (Axes given as an input, ReduceSum from opset
    13 and the others from 18, are left alone.)
    """
    done = 0
    for node in list(g.graph.node):
        if node.op_type not in ("ReduceMean", "ReduceMax", "ReduceMin") or len(node.input) != 1:
            continue
        shape = g.shape(node.input[0])
        axes = _attr(node, "axes")
        if shape is None or not axes:
            continue
        rank = len(shape)
        axes = sorted(int(a) % rank for a in axes)
        tail = list(range(axes[-1] + 1, rank))
        if not tail or any(shape[i] != 1 for i in tail):
            continue
        keep = int(_attr(node, "keepdims", 1))
        attrs = {**_attrs(node), "axes": axes + tail}
        name = node.name or node.output[0]
        new = [helper.make_node(node.op_type, list(node.input), [node.output[0]],
                                name=g.fresh(name), **attrs)]
        if not keep:
            new[0].output[0] = g.fresh(f"{name}/reduced")
            kept = rank - len(axes) - len(tail)
            unsq = np.arange(kept, kept + len(tail), dtype=np.int64)
            new.append(helper.make_node("Unsqueeze", [new[0].output[0], g.add_const(
                unsq, f"{name}/axes")], [node.output[0]], name=g.fresh(f"{name}/units")))
        _insert_after(g.graph, node, new)
        g.graph.node.remove(node)
        g = _Graph(g.model)
        done += 1
    return done


# ---- parallel per-channel tails merged after their concatenation


def _channel_const(value: np.ndarray, x_rank: int, axis: int, channels: int) -> np.ndarray | None:
    """A constant operand that varies along ``axis`` only, as ``[channels]`` (None if not)."""
    if value.ndim > x_rank:
        return None
    full = value.reshape((1,) * (x_rank - value.ndim) + value.shape)
    other = [d for i, d in enumerate(full.shape) if i != axis]
    if any(d != 1 for d in other):
        return None
    if full.shape[axis] == channels:
        return full.reshape(channels)
    if full.shape[axis] == 1:
        return np.repeat(full.reshape(1), channels)
    return None


def _hoist_concat(g: _Graph) -> int:
    """``Concat(op(x_1), ..., op(x_n))`` -> ``op(Concat(x_1, ..., x_n))``.

    For per-channel ops along the concat axis: Relu, Squeeze (of another axis), Mul/Add by a
    constant and BatchNormalization (axis 1) with constant parameters, whose parameters are
    concatenated too. One kernel then runs on the whole map instead of one per branch.
    """
    done = 0
    for cat in list(g.graph.node):
        if cat.op_type != "Concat" or len(cat.input) < 2:
            continue
        branch = [g.producer.get(ref) for ref in cat.input]
        if any(b is None for b in branch) or len({b.op_type for b in branch}) != 1:
            continue
        if len({id(b) for b in branch}) != len(branch) or \
                not all(g.only_user(b.output[0], cat) for b in branch):
            continue
        op = branch[0].op_type
        out_shape = g.shape(cat.output[0])
        if out_shape is None:
            continue
        rank = len(out_shape)
        axis = int(_attr(cat, "axis")) % rank
        x_refs = [b.input[0] for b in branch]
        x_shapes = [g.shape(ref) for ref in x_refs]
        if any(s is None for s in x_shapes):
            continue
        channels = [g.shape(ref)[axis] for ref in cat.input]
        if any(c is None for c in channels):
            continue
        in_axis, extra_inputs, attrs = axis, [], _attrs(branch[0])
        if op == "Relu":
            if any(b.attribute for b in branch):
                continue
        elif op == "Squeeze":
            axes_list = [g.const(b.input[1]) if len(b.input) > 1 else None for b in branch]
            if any(a is None for a in axes_list):
                continue
            in_rank = len(x_shapes[0])
            axes_sets = {tuple(sorted(int(a) % in_rank for a in axes)) for axes in axes_list}
            if len(axes_sets) != 1:
                continue
            (axes,) = axes_sets
            kept = [i for i in range(in_rank) if i not in axes]
            in_axis = kept[axis]
            extra_inputs = [branch[0].input[1]]
        elif op in ("Mul", "Add"):
            consts = [g.const(b.input[1]) for b in branch]
            if any(c is None for c in consts) or any(
                    g.const(b.input[0]) is not None for b in branch):
                continue
            per = [_channel_const(c, rank, axis, n) for c, n in zip(consts, channels)]
            if any(p is None for p in per) or any(len(s) != rank for s in x_shapes):
                continue
            merged = np.concatenate(per).astype(consts[0].dtype)
            extra_inputs = [g.add_const(merged.reshape(-1, *([1] * (rank - axis - 1))),
                                        f"{cat.name}/{op}")]
        elif op == "BatchNormalization":
            if axis != 1 or any(_attrs(b) != attrs for b in branch) or \
                    any(len(b.output) != 1 for b in branch) or attrs.get("training_mode", 0):
                continue
            params = [[g.const(ref) for ref in b.input[1:5]] for b in branch]
            if any(p is None for ps in params for p in ps):
                continue
            extra_inputs = [g.add_const(np.concatenate([ps[k] for ps in params]),
                                        f"{cat.name}/bn{k}") for k in range(4)]
        else:
            continue
        name = cat.name or cat.output[0]
        inner = g.fresh(f"{name}/before_{op}")
        new = [
            helper.make_node("Concat", x_refs, [inner], axis=in_axis, name=g.fresh(name)),
            helper.make_node(op, [inner, *extra_inputs], [cat.output[0]],
                             name=g.fresh(f"{name}/{op}"), **attrs),
        ]
        _insert_after(g.graph, cat, new)
        g.graph.node.remove(cat)
        _remove_dead(g.model)
        _toposort(g.model)
        g = _Graph(g.model)
        done += 1
    return done


# ---- the dense layer


def _fold_affine_into_matmul(g: _Graph) -> int:
    """``MatMul(x * s + t, W)`` -> ``MatMul(x, s[:, None] * W) + t @ W``.

    tf2onnx writes the batch norm in front of musicnn's dense layer as a Mul and an Add by
    constants along the last axis; the dense weights absorb them (the bias Add after the
    MatMul, when there is one, absorbs ``t @ W``).
    """
    done = 0
    for mm in list(g.graph.node):
        if mm.op_type != "MatMul":
            continue
        weight = g.const(mm.input[1])
        add = g.producer.get(mm.input[0])
        if weight is None or weight.ndim != 2 or add is None or add.op_type != "Add" \
                or not g.only_user(add.output[0], mm):
            continue
        shift = g.const(add.input[1])
        mul = g.producer.get(add.input[0])
        if shift is None or mul is None or mul.op_type != "Mul" \
                or not g.only_user(mul.output[0], add):
            continue
        scale = g.const(mul.input[1])
        k = weight.shape[0]
        if scale is None or scale.size != k or scale.shape[-1:] != (k,) or \
                shift.size != k or shift.shape[-1:] != (k,):
            continue
        w64 = weight.astype(np.float64)
        new_w = scale.reshape(k, 1).astype(np.float64) * w64
        bias = shift.reshape(k).astype(np.float64) @ w64
        users = g.consumers.get(mm.output[0], [])
        bias_add = users[0] if len(users) == 1 and users[0].op_type == "Add" \
            and mm.output[0] not in g.outputs else None
        old_bias = None
        if bias_add is not None:
            other = [ref for ref in bias_add.input if ref != mm.output[0]]
            old_bias = g.const(other[0]) if len(other) == 1 else None
            if old_bias is None or old_bias.size != weight.shape[1] \
                    or old_bias.shape[-1:] != (weight.shape[1],):
                bias_add = None
        mm.input[0] = mul.input[0]
        mm.input[1] = g.add_const(new_w.astype(weight.dtype), mm.input[1])
        if bias_add is not None:
            new_bias = (bias + old_bias.reshape(-1).astype(np.float64)).astype(weight.dtype)
            bias_add.input[:] = [mm.output[0], g.add_const(new_bias, f"{mm.name}/bias")]
        else:
            out = mm.output[0]
            mm.output[0] = g.fresh(f"{mm.name}/product")
            _insert_after(g.graph, mm, [helper.make_node(
                "Add", [mm.output[0], g.add_const(bias.astype(weight.dtype), f"{mm.name}/bias")],
                [out], name=g.fresh(f"{mm.name}/bias"))])
        _remove_dead(g.model)
        g = _Graph(g.model)
        done += 1
    return done


# --------------------------------------------------------------------------- the driver


def _count(model: onnx.ModelProto, op: str) -> int:
    return sum(node.op_type == op for node in model.graph.node)

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


# --------------------------------------------------------------------------- int8 (not exact)


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


# --------------------------------------------------------------------------- parity


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
