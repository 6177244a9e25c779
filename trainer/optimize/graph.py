"""The graph helper the rewrites share: indexes, shape inference, order, clean-up.

:class:`_Graph` indexes one graph (producers, consumers, constants, shapes) and is rebuilt
after every change; the functions below read node attributes, drop dead nodes, restore a
topological order and bypass a node whose output equals one of its inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

# No __all__ here: trainer.optimize (its __init__) lists what the package exports.


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


def _replace(g: _Graph, old: onnx.NodeProto, new: Iterable[onnx.NodeProto]) -> _Graph:
    """Put ``new`` where ``old`` was, drop what no longer feeds an output, restore the
    topological order, and return a fresh view of the model (the old one's maps are stale)."""
    _insert_after(g.graph, old, new)
    g.graph.node.remove(old)
    _remove_dead(g.model)
    _toposort(g.model)
    return _Graph(g.model)


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


def _count(model: onnx.ModelProto, op: str) -> int:
    return sum(node.op_type == op for node in model.graph.node)
