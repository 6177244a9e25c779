"""trainer.optimize: graph rewrites that keep a backbone's outputs (tiny graphs, the bundled one).

The tiny graph has the converter's patterns: a one-channel full-width conv in NHWC clothing
(Unsqueeze, Transpose and Reshape chains around it), a batch norm right after a conv, parallel
Relu/BatchNormalization/Squeeze tails into a Concat, a residual Add of transposed maps, time
pooling over a middle axis, an Identity and the dense layer's Mul/Add in front of a MatMul.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tagger.model import default_models_dir
from trainer.optimize import (PARITY_TOLERANCE, backbone_parity, check_backbone_parity,
                              optimize_backbone)

T, F = 9, 6  # frames, mel bands of the tiny graph


def _bn(name: str, x: str, y: str, channels: int, rng: np.random.Generator) -> tuple:
    params = [rng.uniform(-1.5, 1.5, channels), rng.normal(0, 0.5, channels),
              rng.normal(0, 0.5, channels), rng.uniform(0.2, 2.0, channels)]
    inits = [numpy_helper.from_array(p.astype(np.float32), f"{name}/{k}")
             for p, k in zip(params, ("gamma", "beta", "mean", "var"))]
    node = helper.make_node("BatchNormalization", [x] + [i.name for i in inits], [y], name=name,
                            epsilon=1e-3)
    return node, inits


def tiny_backbone(seed: int = 0) -> onnx.ModelProto:
    """``mel [batch, T, F] -> embedding [batch, 8]`` built like tf2onnx's musicnn graph."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def add(op: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    x = add("Unsqueeze", ["mel", const("ax1", np.array([1], np.int64))], "x4")  # [N,1,T,F]
    x = add("Identity", [x], "x4id")
    # front end: two temporal convs with per-channel tails into a concat (channels 3 + 2)
    tails = []
    for i, (c, k) in enumerate([(3, 3), (2, 5)]):
        w = rng.normal(0, 0.5, (c, 1, k, 1)).astype(np.float32)
        b = rng.normal(0, .1, c).astype(np.float32)
        y = add("Conv", [x, const(f"fw{i}", w), const(f"fb{i}", b)], f"fconv{i}",
                pads=[k // 2, 0, k // 2, 0])
        y = add("MaxPool", [y], f"fpool{i}", kernel_shape=[1, F], strides=[1, F])  # [N,c,T,1]
        y = add("Relu", [y], f"frelu{i}")
        bn, bn_inits = _bn(f"fbn{i}", y, f"fbnout{i}", c, rng)
        nodes.append(bn)
        inits += bn_inits
        axis3 = const(f"sqf{i}", np.array([3], np.int64))
        tails.append(add("Squeeze", [f"fbnout{i}", axis3], f"fsq{i}"))
    front = add("Concat", tails, "front", axis=1)  # [N,5,T]
    # mid end in NHWC clothing: [N,5,T] -> [N,T,5,1] -> [N,1,T,5] -> full-width conv
    f4 = add("Unsqueeze", [front, const("ax3", np.array([3], np.int64))], "front4")
    nhwc = add("Transpose", [f4], "front_nhwc", perm=[0, 2, 1, 3])  # [N,T,5,1]
    img = add("Reshape", [nhwc, const("to_img5", np.array([-1, 1, T, 5], np.int64))], "img5")
    w = rng.normal(0, 0.4, (4, 1, 3, 5)).astype(np.float32)
    m = add("Conv", [img, const("mw1", w), const("mb1", rng.normal(0, .1, 4).astype(np.float32))],
            "mconv1", pads=[1, 0, 1, 0])  # [N,4,T,1]
    bn, bn_inits = _bn("mbn1", m, "mbn1out", 4, rng)  # conv -> batch norm: folded
    nodes.append(bn)
    inits += bn_inits
    m = add("Relu", ["mbn1out"], "mrelu1")
    m = add("Transpose", [m], "m1_nhwc", perm=[0, 2, 3, 1])  # [N,T,1,4]
    m1 = add("Reshape", [m, const("to_col", np.array([-1, T, 4, 1], np.int64))], "m1")  # [N,T,4,1]
    img = add("Reshape", [m1, const("to_img4", np.array([-1, 1, T, 4], np.int64))], "img4")
    w = rng.normal(0, 0.4, (4, 1, 3, 4)).astype(np.float32)
    m = add("Conv", [img, const("mw2", w), const("mb2", rng.normal(0, .1, 4).astype(np.float32))],
            "mconv2", pads=[1, 0, 1, 0])
    m = add("Relu", [m], "mrelu2")
    bn, bn_inits = _bn("mbn2", m, "mbn2out", 4, rng)
    nodes.append(bn)
    inits += bn_inits
    m2 = add("Transpose", ["mbn2out"], "m2", perm=[0, 2, 1, 3])  # [N,T,4,1]
    res = add("Add", [m2, m1], "res")
    feats = add("Concat", [nhwc, m1, res], "feats", axis=2)  # [N,T,13,1]
    mean = add("ReduceMean", [feats], "mean", axes=[1], keepdims=1)
    mean = add("Squeeze", [mean, const("sq1", np.array([1], np.int64))], "mean_sq")  # [N,13,1]
    mx = add("ReduceMax", [feats], "max", axes=[1], keepdims=0)  # [N,13,1]
    pooled = add("Concat", [mx, mean], "pooled", axis=2)  # [N,13,2]
    flat = add("Flatten", [pooled], "flat")  # [N,26]
    y = add("Mul", [flat, const("bn9s", rng.uniform(0.5, 2, 26).astype(np.float32))], "bn9m")
    y = add("Add", [y, const("bn9t", rng.normal(0, 1, 26).astype(np.float32))], "bn9a")
    y = add("MatMul", [y, const("dw", rng.normal(0, .3, (26, 8)).astype(np.float32))], "dense")
    y = add("Add", [y, const("db", rng.normal(0, .1, 8).astype(np.float32))], "dense_b")
    y = add("Relu", [y], "dense_relu")
    y = add("Flatten", [y], "flat_emb", axis=1)
    add("Concat", [y], "embedding", axis=1)

    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", T, F])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"genreml.kind": "backbone", "genreml.name": "tiny"})
    onnx.checker.check_model(model, full_check=True)
    return model


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.fixture(scope="module")
def tiny() -> onnx.ModelProto:
    return tiny_backbone()


@pytest.fixture(scope="module")
def mel() -> np.ndarray:
    # log-mel-like: non-negative, a few peaks
    rng = np.random.default_rng(1)
    return (rng.gamma(2.0, 0.8, (5, T, F)) * (rng.random((5, T, F)) > 0.2)).astype(np.float32)


def test_rewrite_keeps_outputs(tiny, mel):
    before = onnx.ModelProto()
    before.CopyFrom(tiny)
    opt = optimize_backbone(tiny)
    assert tiny == before  # the input model is left alone
    for batch in (1, 2, 5):
        diffs = backbone_parity(tiny, opt, mel[:batch])
        (mx, _), = diffs.values()
        assert mx < 1e-5, diffs
    # what the rewrites are for
    assert "Transpose" not in ops(opt) and "Identity" not in ops(opt)
    assert ops(opt).count("BatchNormalization") < ops(tiny).count("BatchNormalization")
    assert ops(opt).count("Concat") < ops(tiny).count("Concat")
    assert len(opt.graph.node) < len(tiny.graph.node)
    convs = [n for n in opt.graph.node if n.op_type == "Conv"]
    weights = {i.name: i for i in opt.graph.initializer}
    assert sorted(len(weights[c.input[1]].dims) for c in convs) == [3, 3, 4, 4]  # two 1-D
    # the interface and metadata do not change
    assert opt.graph.input == tiny.graph.input and opt.graph.output == tiny.graph.output
    assert opt.metadata_props == tiny.metadata_props
    assert opt.opset_import == tiny.opset_import and opt.ir_version == tiny.ir_version


def test_idempotent(tiny, mel):
    once = optimize_backbone(tiny)
    twice = optimize_backbone(once)
    assert ops(twice) == ops(once)
    (mx, _), = backbone_parity(once, twice, mel).values()
    assert mx < 1e-6


def test_parity_check_fails_on_a_changed_graph(tiny, mel):
    opt = optimize_backbone(tiny)
    assert check_backbone_parity(tiny, opt, mel) <= PARITY_TOLERANCE
    broken = onnx.ModelProto()
    broken.CopyFrom(opt)
    dense = next(i for i in broken.graph.initializer if tuple(i.dims) == (26, 8))
    w = numpy_helper.to_array(dense).copy()
    w[0, 0] += 0.01
    dense.CopyFrom(numpy_helper.from_array(w, dense.name))
    with pytest.raises(ValueError, match="differ"):
        check_backbone_parity(tiny, broken, mel)


def test_illegal_rewrites_are_left_alone(mel):
    """A batch norm whose conv output is read elsewhere stays; a conv padded along the width
    is not a 1-D conv."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.normal(0, 1, (3, 1, 3, F)).astype(np.float32), "w")
    bn, bn_inits = _bn("bn", "c", "b", 3, rng)
    nodes = [
        helper.make_node("Unsqueeze", ["mel", "ax"], ["x"]),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # width padded
        bn,
        helper.make_node("Add", ["b", "c"], ["embedding"]),  # c read twice
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", T, F])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3, T, 3])],
        [w, numpy_helper.from_array(np.array([1], np.int64), "ax"), *bn_inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opt = optimize_backbone(model)
    assert ops(opt) == ops(model)
    (mx, _), = backbone_parity(model, opt, mel).values()
    assert mx == 0.0


BUNDLED = default_models_dir() / "MSD_musicnn.onnx"


@pytest.mark.skipif(not BUNDLED.is_file(), reason=f"no bundled backbone at {BUNDLED}")
def test_bundled_backbone_parity():
    from trainer.musicnn import parity_features

    model = onnx.load(str(BUNDLED))
    opt = optimize_backbone(model)
    mel = parity_features(8, seed=3)
    diffs = backbone_parity(model, opt, mel)
    assert set(diffs) == {"embedding"}
    assert diffs["embedding"][0] <= PARITY_TOLERANCE, diffs
    assert opt.metadata_props == model.metadata_props
    # the bundled backbone is shipped optimised: nothing left to rewrite
    assert "Transpose" not in ops(model) and len(opt.graph.node) == len(model.graph.node)
