"""``python -m trainer.split``: a format 1 file (backbone and heads in one graph) becomes a
backbone and head files that load and give the same probabilities."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx_models as om
from tagger.model import HeadSpec, load_models
from trainer.split import main


def _format_1(path):
    """The old shape: mel -> mean over frames -> ``embedding`` -> two heads, one file."""
    n = om.FEATURES.n_mels
    inp = helper.make_tensor_value_info("mel", TensorProto.FLOAT,
                                        ["batch", om.FEATURES.n_frames, n])
    nodes = [helper.make_node("ReduceMean", ["mel"], ["embedding"], axes=[1], keepdims=0)]
    inits, outputs = [], []
    heads = [HeadSpec("genre", "genre", tuple(om.GENRES), 0.3),
             HeadSpec("emotion", "emotion", tuple(om.EMOTIONS))]
    for spec, w in zip(heads, (om.band_weights(n, 3), om.band_weights(n, 2))):
        more, weights = om._head_nodes(spec.output, "embedding", w, np.zeros(w.shape[1]),
                                       "sigmoid" if spec.task == "genre" else "softmax")
        nodes += more
        inits += weights
        outputs.append(helper.make_tensor_value_info(spec.output, TensorProto.FLOAT,
                                                     ["batch", len(spec.labels)]))
    graph = helper.make_graph(nodes, "old", [inp], outputs, inits)
    graph.value_info.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT,
                                                          ["batch", n]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"format": "1", "name": "old", "version": "3", "sample_rate": str(om.SR),
            "clip_seconds": "1.0", "features": om.FEATURES.to_json(),
            "heads": json.dumps([h.to_dict() for h in heads]), "backbone": "mean",
            "embedding": "mean", "dataset": "tiny"}
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key="genreml." + key,
                                                                value=value))
    onnx.save(model, path)
    return path


def test_split_converts_a_format_1_file(tmp_path, capsys):
    old = _format_1(tmp_path / "old.onnx")
    main([str(old), str(tmp_path / "new")])
    written = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert written == ["mean.onnx", "old-emotion.onnx", "old-genre.onnx"]
    models = load_models(tmp_path / "new", device="cpu")
    assert models.identities["genre"].version == "3"
    assert [h.threshold for h, _ in models.specs if h.task == "genre"] == [0.3]
    mel = np.random.default_rng(0).uniform(0, 3, (5, om.FEATURES.n_frames, om.FEATURES.n_mels))
    mel = mel.astype(np.float32)
    got = models.apply_heads(models.backbone.embed(mel))
    import onnxruntime as ort

    whole = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"])
    for task, want in zip(("genre", "emotion"), whole.run(["genre", "emotion"], {"mel": mel})):
        np.testing.assert_allclose(got[task], want, atol=1e-6)
    meta = {p.key: p.value for p in onnx.load(tmp_path / "new" / "old-genre.onnx").metadata_props}
    assert meta["genreml.dataset"] == "tiny" and meta["genreml.kind"] == "head"
