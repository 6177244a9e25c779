"""trainer.optimize: graph rewrites that keep a backbone's outputs (tiny graphs, the bundled one),
``save_split(optimize=True)`` and ``python -m trainer.optimize FOLDER``.

The tiny graph has the converter's patterns: a one-channel full-width conv in NHWC clothing
(Unsqueeze, Transpose and Reshape chains around it), a batch norm right after a conv, parallel
Relu/BatchNormalization/Squeeze tails into a Concat, a residual Add of transposed maps, time
pooling over a middle axis, an Identity and the dense layer's Mul/Add in front of a MatMul.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_models as om
from tagger.features import MUSICNN_FEATURES, FeatureSettings
from tagger.model import HeadSpec, default_models_dir, file_sha256, load_models
from trainer.optimize import (PARITY_TOLERANCE, backbone_parity, check_backbone_parity,
                              optimize_backbone)
from trainer.optimize.folder import main, parity_mel

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


# --------------------------------------------------------------------------- model folders

TINY_FEATURES = FeatureSettings(n_mels=F, n_frames=T)  # 16 kHz, 512/256 STFT, as musicnn
ROOT = Path(__file__).resolve().parents[1]


def _split_folder(folder: Path, optimize: bool) -> Path:
    """A format 2 folder as the trainer writes it: the tiny backbone joined with a genre and
    an emotion head, cut by ``save_split``."""
    from trainer.export import join
    from trainer.split import save_split

    rng = np.random.default_rng(5)
    heads = {}
    for task, n, act in (("genre", 3, "sigmoid"), ("emotion", 2, "softmax")):
        nodes, inits = om._head_nodes(task, "x", rng.normal(0, 1, (8, n)), rng.normal(0, .5, n),
                                      act)
        graph = helper.make_graph(
            nodes, task, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
            [helper.make_tensor_value_info(task, TensorProto.FLOAT, ["batch", n])], inits)
        heads[task] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        heads[task].ir_version = 8
    specs = [HeadSpec("genre", "genre", ("a", "b", "c"), 0.3),
             HeadSpec("emotion", "emotion", ("calm", "tense"))]
    save_split(join(tiny_backbone(), ["embedding"], heads), folder, "tiny", "1", ["embedding"],
               "t", "1", 16000, 0.15, TINY_FEATURES, specs, optimize=optimize)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _probs(folder: Path, mel: np.ndarray) -> dict[str, np.ndarray]:
    models = load_models(folder, device="cpu", threads=1)
    return models.apply_heads(models.backbone.embed(mel))


def test_folder_command_optimises_in_place(tmp_path, mel, capsys):
    folder = _split_folder(tmp_path / "m", optimize=False)
    before = _probs(folder, mel)
    old = _files(folder)
    assert main([str(folder)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tiny.onnx: ") and "re-stamped: t-emotion.onnx, t-genre.onnx" in line
    new = _files(folder)
    assert sorted(new) == sorted(old) and all(new[k] != old[k] for k in old)
    backbone = onnx.load(str(folder / "tiny.onnx"))
    assert "Transpose" not in ops(backbone) and len(backbone.graph.node) < len(
        onnx.load_from_string(old["tiny.onnx"]).graph.node)
    for head in ("t-genre.onnx", "t-emotion.onnx"):  # only the sha256 they name changed
        meta = {p.key: p.value for p in onnx.load(str(folder / head)).metadata_props}
        was = {p.key: p.value for p in onnx.load_from_string(old[head]).metadata_props}
        assert meta == {**was, "genreml.backbone_sha256": file_sha256(folder / "tiny.onnx")}
    after = _probs(folder, mel)  # loads: the heads name the new backbone
    for task in ("genre", "emotion"):
        np.testing.assert_allclose(after[task], before[task], atol=1e-4)
    # a second run finds nothing to do and writes nothing
    assert main([str(folder)]) == 0
    assert "already optimised" in capsys.readouterr().out
    assert _files(folder) == new


def test_save_split_optimize_writes_what_the_command_makes(tmp_path):
    """``save_split(optimize=True)`` (``make models``) and the command on a folder written
    without it give the same files, byte for byte."""
    plain = _split_folder(tmp_path / "plain", optimize=False)
    assert main([str(plain)]) == 0
    optimized = _split_folder(tmp_path / "optimized", optimize=True)
    assert _files(optimized) == _files(plain)


def test_folder_command_refuses_without_one_backbone(tmp_path, capsys):
    folder = _split_folder(tmp_path / "m", optimize=False)
    two = tmp_path / "two"
    shutil.copytree(folder, two)
    shutil.copy(two / "tiny.onnx", two / "other.onnx")
    heads_only = tmp_path / "heads"
    heads_only.mkdir()
    shutil.copy(folder / "t-genre.onnx", heads_only)
    for bad, why in ((two, "found 2 (other.onnx, tiny.onnx)"), (heads_only, "found 0"),
                     (tmp_path / "absent", "not a folder")):
        files = _files(bad) if bad.is_dir() else None
        assert main([str(bad)]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err
        assert (_files(bad) if bad.is_dir() else None) == files
    proc = subprocess.run([sys.executable, "-m", "trainer.optimize", str(two)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "exactly one backbone" in proc.stderr, proc.stderr


def test_folder_command_writes_nothing_when_parity_fails(tmp_path, capsys, monkeypatch):
    import trainer.optimize.folder as folder_mod

    def broken(model: onnx.ModelProto) -> onnx.ModelProto:
        out = optimize_backbone(model)
        dense = next(i for i in out.graph.initializer if tuple(i.dims) == (26, 8))
        w = numpy_helper.to_array(dense) * np.float32(1.05)  # every unit (some are dead)
        dense.CopyFrom(numpy_helper.from_array(w, dense.name))
        return out

    folder = _split_folder(tmp_path / "m", optimize=False)
    old = _files(folder)
    monkeypatch.setattr(folder_mod, "optimize_backbone", broken)
    assert main([str(folder)]) == 1
    assert "differ" in capsys.readouterr().err
    assert _files(folder) == old


def test_parity_mel_of_musicnn_is_its_parity_features():
    from trainer.musicnn import parity_features

    meta = {"sample_rate": "16000", "clip_seconds": "3.0", "features": MUSICNN_FEATURES.to_json()}
    np.testing.assert_array_equal(parity_mel(meta), parity_features(16))
    tiny = {"sample_rate": "16000", "clip_seconds": "0.15", "features": TINY_FEATURES.to_json()}
    assert parity_mel(tiny, 4).shape == (4, T, F)


@pytest.mark.skipif(not BUNDLED.is_file(), reason=f"no bundled backbone at {BUNDLED}")
def test_folder_command_leaves_the_bundled_models_alone(tmp_path, capsys):
    for path in default_models_dir().glob("*.onnx"):
        shutil.copy(path, tmp_path)
    old = _files(tmp_path)
    assert main([str(tmp_path)]) == 0
    assert "already optimised" in capsys.readouterr().out
    assert _files(tmp_path) == old
