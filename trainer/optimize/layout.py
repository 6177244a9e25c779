"""Layout rewrites: chains of data-movement ops collapsed, transposes and unsqueezes sunk.

tf2onnx wraps musicnn's mid end in NHWC layout changes (``Transpose``, ``Reshape``,
``Squeeze``, ``Unsqueeze``, ``Flatten``). These passes move them down past the ops that do
not care about layout until they meet and cancel, collapse what is left to one op or none,
and widen a reduction over a middle axis to the unit axes after it (a faster kernel).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from .graph import (_attr, _attrs, _bypass, _Graph, _insert_after, _remove_dead, _replace)

# No __all__ here: trainer.optimize (its __init__) lists what the package exports.

# Ops that only move data (no arithmetic): chains of them collapse to one op or none.
_MOVEMENT = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
# Batch sizes a movement chain is simulated with (two, to tell the batch axis from others).
_SIM_BATCHES = (2, 3)


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
        g = _replace(g, node, moved)
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
        g = _replace(g, node, [moved, unsq])
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
