"""musicnn backbone conversion (trainer.musicnn): TF-1 checkpoint -> ONNX, checked against TF.

Needs the train extra and ``pip install --no-deps musicnn==0.1.0``; the MSD_musicnn
conversion runs once per module (about 10 s on 2 cores).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from audiogen import signal
from onnx import TensorProto, helper, numpy_helper

from tagger.features import MUSICNN_FEATURES, FeatureSettings, log_mel
from tagger.onnxsession import open_session
from trainer import musicnn
from trainer.export import check_parity, parity_diffs, run_onnx
from trainer.musicnn.rewrite import pool_before_batchnorm

MODEL = "MSD_musicnn"
SR = musicnn.SAMPLE_RATE
N_SAMPLES = int(musicnn.CLIP_SECONDS * SR)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return musicnn.convert_backbone(MODEL, tmp_path_factory.mktemp("musicnn") / f"{MODEL}.onnx")


@pytest.fixture(scope="module")
def mel() -> np.ndarray:
    """Log-mel patches of generated audio at 16 kHz: tones, noise, a chirp, a near
    full-scale mix (where musicnn's own float16 mel overflowed) and silence."""
    kinds = [
        signal(3.0, SR, kind="tone", freq=440.0)[:, 0],
        signal(3.0, SR, kind="tone", freq=110.0)[:, 0] * 1.9,
        signal(3.0, SR, kind="noise", seed=1)[:, 0],
        signal(3.0, SR, kind="noise", seed=2)[:, 0] * 0.02,
        signal(3.0, SR, kind="chirp")[:, 0],
        signal(3.0, SR, kind="silence")[:, 0],
    ]
    clips = np.stack([k[:N_SAMPLES] for k in kinds] + list(musicnn.synthetic_clips(4, seed=7)))
    patches = log_mel(clips, SR, MUSICNN_FEATURES)
    assert patches.shape == (10, 187, 96) and np.isfinite(patches).all() and patches.max() > 3.0
    return patches


@pytest.fixture(scope="module")
def tf_out(mel):
    return musicnn.run_frozen_graph(musicnn.frozen_graph_def(MODEL), mel)


@pytest.fixture(scope="module")
def ort_out(onnx_path, mel):
    return run_onnx(onnx_path, {"mel": mel})


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_names_and_shapes(onnx_path):
    model = onnx.load(onnx_path)
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    assert inp.name == "mel"
    assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
    assert _dims(inp) == ["batch", 187, 96]
    outputs = {o.name: _dims(o) for o in model.graph.output}
    assert outputs == {
        "taggram": ["batch", 50],
        "penultimate": ["batch", 200],
        "mean_pool": ["batch", 753],
        "max_pool": ["batch", 753],
    }
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {TensorProto.FLOAT}
    # No training leftovers, no float64, nothing but the weights (~3.2 MB).
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"If", "Loop", "RandomUniform", "Dropout", "Cast"}
    assert {i.data_type for i in model.graph.initializer} <= {TensorProto.FLOAT, TensorProto.INT64}
    assert onnx_path.stat().st_size < 3.5e6


def test_metadata(onnx_path):
    meta = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert meta["genreml.backbone"] == MODEL
    assert meta["genreml.backbone_source"] == "musicnn 0.1.0 (ISC), Pons & Serra 2019"
    tags = json.loads(meta["genreml.tags"])
    assert tags == musicnn.musicnn_tags(MODEL) and len(tags) == 50
    assert tags[:3] == ["rock", "pop", "alternative"]
    assert meta["genreml.features"] == MUSICNN_FEATURES.to_json()
    assert FeatureSettings.from_dict(json.loads(meta["genreml.features"])) == MUSICNN_FEATURES
    assert meta["genreml.sample_rate"] == "16000"
    assert meta["genreml.clip_seconds"] == "3.0"


def test_parity_with_tensorflow(onnx_path, mel, tf_out, ort_out):
    assert check_parity(onnx_path, {"mel": mel}, tf_out) <= 1e-4
    diffs = parity_diffs(tf_out, ort_out)
    assert diffs["taggram"][0] <= 1e-5  # plain max abs diff on the probabilities
    assert all(scaled <= 1e-4 for _, scaled in diffs.values()), diffs


def test_bundled_backbone_matches_tensorflow(mel, tf_out):
    """The shipped backbone (converted, then optimised by trainer.optimize) still computes
    the checkpoint's penultimate layer."""
    from tagger.model import default_models_dir

    emb = run_onnx(default_models_dir() / "MSD_musicnn.onnx", {"mel": mel})["embedding"]
    want = tf_out["penultimate"].reshape(len(mel), -1)
    np.testing.assert_allclose(emb, want, atol=1e-4)


def test_folding_matches_training_graph(mel, tf_out):
    # The same checkpoint run by TF with its tf.cond control flow intact (is_training=False).
    unfolded = musicnn.run_frozen_graph(musicnn.frozen_graph_def(MODEL, fold=False), mel)
    for name, value in tf_out.items():
        np.testing.assert_allclose(unfolded[name], value, rtol=0, atol=1e-6, err_msg=name)


def test_outputs_are_sane(ort_out, mel):
    for name, dim in musicnn.OUTPUT_DIMS.items():
        assert ort_out[name].shape == (len(mel), dim)
        assert ort_out[name].dtype == np.float32 and np.isfinite(ort_out[name]).all()
    taggram = ort_out["taggram"]
    assert taggram.min() >= 0.0 and taggram.max() <= 1.0
    assert np.ptp(taggram, axis=0).max() > 0.05  # different audio, different tags
    assert (ort_out["max_pool"] >= ort_out["mean_pool"] - 1e-5).all()


def test_batch_size_does_not_change_results(onnx_path, mel, ort_out):
    sess = open_session(onnx_path)
    names = list(musicnn.OUTPUT_DIMS)
    singles = [sess.run(names, {"mel": mel[i:i + 1]}) for i in range(len(mel))]
    big = np.resize(mel, (64, *mel.shape[1:]))  # batch 64: the clips repeated
    batched = sess.run(names, {"mel": big})
    for k, name in enumerate(names):
        single = np.concatenate([s[k] for s in singles])
        np.testing.assert_allclose(single, ort_out[name], rtol=1e-5, atol=1e-5, err_msg=name)
        assert batched[k].shape == (64, musicnn.OUTPUT_DIMS[name])
        expected = single[np.arange(64) % len(mel)]
        np.testing.assert_allclose(batched[k], expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_failed_parity_writes_nothing(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(RuntimeError, match="differ from TensorFlow"):
        musicnn.convert_backbone(MODEL, out, tolerance=-1.0)  # a check no model passes
    assert list(tmp_path.iterdir()) == []


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown musicnn backbone"):
        musicnn.checkpoint_dir("MSD_vgg")


def test_pool_rewrite_is_exact():
    """Conv -> Relu -> BatchNorm -> MaxPool gives exactly what the rewritten
    Conv(sign-flipped) -> MaxPool -> Slice -> Mul -> Relu -> BatchNorm gives."""
    rng = np.random.default_rng(0)
    c_out = 20  # not a multiple of 16: exercises the zero-filter padding and Slice
    gamma = rng.normal(size=c_out).astype(np.float32)  # both signs
    inits = [
        numpy_helper.from_array(rng.normal(size=(c_out, 1, 3, 5)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b"),
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.1, 2, size=c_out).astype(np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["n"],
                         name="bn", epsilon=1e-3),
        helper.make_node("MaxPool", ["n"], ["y"], name="pool",
                         kernel_shape=[1, 12], strides=[1, 12]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 10, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c_out, 8, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert pool_before_batchnorm(rewritten) == 1
    onnx.checker.check_model(rewritten)
    assert "BatchNormalization" not in {n.op_type for n in rewritten.graph.node[:2]}

    x = rng.normal(size=(4, 1, 10, 16)).astype(np.float32) * 3
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = [ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
           .run(None, {"x": x})[0] for m in (model, rewritten)]
    assert run[0].shape == run[1].shape == (4, c_out, 8, 1)
    np.testing.assert_array_equal(run[0], run[1])
