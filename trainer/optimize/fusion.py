"""Arithmetic folded together: batch norms into convs and MatMuls, full-width convs as 1-D
convs, parallel per-channel tails merged after their concatenation, no-op nodes dropped.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from .graph import (_attr, _attrs, _bypass, _Graph, _insert_after, _remove_dead, _replace)

# No __all__ here: trainer.optimize (its __init__) lists what the package exports.


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
        g = _replace(g, cat, new)
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
