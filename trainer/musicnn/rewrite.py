"""Rewrites of the tf2onnx graph: fixed names and dims, no clutter, pools moved forward.

tf2onnx leaves symbolic dims with generated names, doc strings, value_info and unused
initializers; and musicnn's front end runs ReLU and batch norm on maps far larger than the
max pool after them needs. These rewrites change no output (the pool move is exact, see
:func:`pool_before_batchnorm`) and make the model smaller and ~25% faster on the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint import INPUT_NAME, OUTPUT_DIMS, PATCH_SHAPE

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["pool_before_batchnorm", "set_batch_dims", "strip_model"]


def set_batch_dims(model: "onnx.ModelProto") -> None:
    """Name the batch axis ``batch`` everywhere and pin the other dims of inputs and outputs."""
    graph = model.graph
    if [i.name for i in graph.input] != [INPUT_NAME]:
        raise ValueError(f"expected the single input {INPUT_NAME!r}, "
                         f"got {[i.name for i in graph.input]}")
    if [o.name for o in graph.output] != list(OUTPUT_DIMS):
        raise ValueError(f"expected outputs {list(OUTPUT_DIMS)}, "
                         f"got {[o.name for o in graph.output]}")
    shapes = {INPUT_NAME: PATCH_SHAPE, **{k: (v,) for k, v in OUTPUT_DIMS.items()}}
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        dims.add().dim_param = "batch"
        for size in shapes[value.name]:
            dims.add().dim_value = size


def strip_model(model: "onnx.ModelProto") -> None:
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


def pool_before_batchnorm(model: "onnx.ModelProto", pad_channels: int = 16) -> int:
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
