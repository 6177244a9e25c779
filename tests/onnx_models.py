"""Small real ONNX models for tests, built with ``onnx.helper`` and run by onnxruntime.

Every model is a backbone file and a head file (:mod:`tagger.modelmeta`). The backbone of
``band_model`` and ``constant_model`` is the mean log-mel energy of the frames; ``band_model``'s
heads are fixed linear layers on it, so a tone's frequency decides which label wins;
``constant_model``'s return fixed probabilities whatever the input, for exact threshold and
argmax checks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tagger.features import MUSICNN_FEATURES, FeatureSettings
from tagger.model import (EmbeddingLayout, HeadSpec, backbone_metadata, file_sha256,
                          head_metadata)

SR = 16000
FEATURES = FeatureSettings(n_fft=512, hop_length=256, n_mels=48, fmin=0.0, fmax=8000.0,
                           log="log10_1p", log_multiplier=10000.0, n_frames=63)  # 1-s clips


def _head_nodes(name: str, pooled: str, weights: np.ndarray, bias: np.ndarray,
                activation: str) -> tuple[list, list]:
    w, b = f"{name}_w", f"{name}_b"
    nodes = [
        helper.make_node("MatMul", [pooled, w], [f"{name}_mm"]),
        helper.make_node("Add", [f"{name}_mm", b], [f"{name}_logits"]),
        (helper.make_node("Sigmoid", [f"{name}_logits"], [name]) if activation == "sigmoid"
         else helper.make_node("Softmax", [f"{name}_logits"], [name], axis=-1)),
    ]
    inits = [numpy_helper.from_array(weights.astype(np.float32), w),
             numpy_helper.from_array(bias.astype(np.float32), b)]
    return nodes, inits


def _save(graph: onnx.GraphProto, path: Path, meta: dict[str, str]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def mean_backbone(folder: Path, features: FeatureSettings = FEATURES, sample_rate: int = SR,
                  clip_seconds: float = 1.0, metadata: dict[str, str] | None = None,
                  name: str | None = None) -> Path:
    """The mean log-mel energy over frames as the embedding ``[batch, n_mels]``. Identical
    settings give an identical file (same name and sha256), so models can share it."""
    layout = EmbeddingLayout("embedding", features.n_mels, ("mean",))
    meta = metadata if metadata is not None else backbone_metadata(
        "mean", "1", sample_rate, clip_seconds, features, layout)
    tag = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:10]
    inp = helper.make_tensor_value_info("mel", TensorProto.FLOAT,
                                        ["batch", features.n_frames, features.n_mels])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT,
                                        ["batch", features.n_mels])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["mel"], ["embedding"], axes=[1], keepdims=0)],
        "genreml_test_backbone", [inp], [out])
    return _save(graph, folder / (name or f"backbone-{tag}.onnx"), meta)


def head_file(path: Path, backbone: Path, heads: list[tuple[HeadSpec, np.ndarray, np.ndarray]],
              name: str = "test", version: str = "1",
              metadata: dict[str, str] | None = None) -> Path:
    """Per head ``sigmoid``/``softmax(embedding @ W + b)``, ``W`` ``[dim, n_labels]``, trained
    (as its metadata says) on ``backbone``. ``metadata`` replaces the generated one."""
    dim = heads[0][1].shape[0]
    props = {p.key: p.value for p in onnx.load(backbone).metadata_props}
    layout = (EmbeddingLayout.from_json(props["genreml.embedding"])
              if "genreml.embedding" in props else EmbeddingLayout("embedding", dim, ("mean",)))
    inp = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])
    nodes: list = []
    inits: list = []
    outputs = []
    for spec, w, b in heads:
        act = "sigmoid" if spec.task == "genre" else "softmax"
        n, i = _head_nodes(spec.output, "embedding", w, b, act)
        nodes += n
        inits += i
        outputs.append(helper.make_tensor_value_info(spec.output, TensorProto.FLOAT,
                                                     ["batch", len(spec.labels)]))
    graph = helper.make_graph(nodes, "genreml_test_head", [inp], outputs, inits)
    meta = metadata if metadata is not None else head_metadata(
        name, version, [h for h, _, _ in heads], file_sha256(backbone), layout)
    return _save(graph, path, meta)


def build_model(path: Path, heads: list[tuple[HeadSpec, np.ndarray, np.ndarray]],
                features: FeatureSettings = FEATURES, sample_rate: int = SR,
                clip_seconds: float = 1.0, name: str = "test", version: str = "1",
                metadata: dict[str, str] | None = None) -> Path:
    """A head file at ``path`` (all ``heads`` in it) on :func:`mean_backbone`, written beside
    it. Returns ``path``; :func:`tagger.model.load_models` finds the backbone next to it.
    ``metadata`` replaces the head file's generated metadata when given."""
    backbone = mean_backbone(path.parent, features, sample_rate, clip_seconds)
    return head_file(path, backbone, heads, name, version, metadata)


def band_weights(n_mels: int, n_labels: int, gain: float = 4.0) -> np.ndarray:
    """Label ``k`` listens to the ``k``-th equal slice of the mel bands."""
    w = np.full((n_mels, n_labels), -gain / n_mels, dtype=np.float32)
    edges = np.linspace(0, n_mels, n_labels + 1).astype(int)
    for k in range(n_labels):
        w[edges[k]:edges[k + 1], k] = gain * n_labels / n_mels
    return w


GENRES = ["Low", "Mid", "High"]
EMOTIONS = ["calm", "tense"]


def band_model(path: Path, threshold: float = 0.2, **kw) -> Path:
    """Genre head over three band labels and a two-way emotion head, in one file."""
    n = FEATURES.n_mels
    emo_w = np.zeros((n, 2), np.float32)
    emo_w[: n // 3, 0] = 1.0   # low energy -> calm
    emo_w[n // 3 :, 1] = 1.0   # higher bands -> tense
    heads = [
        (HeadSpec("genre", "genre", tuple(GENRES), threshold), band_weights(n, 3),
         np.full(3, -3.0)),
        (HeadSpec("emotion", "emotion", tuple(EMOTIONS)), emo_w, np.zeros(2)),
    ]
    return build_model(path, heads, **kw)


def constant_model(path: Path, genre_probs: dict[str, float] | None = None,
                   emotion_probs: dict[str, float] | None = None, threshold: float = 0.2,
                   **kw) -> Path:
    """Heads whose outputs are the given probabilities for every clip."""
    n = kw.get("features", FEATURES).n_mels
    heads = []
    if genre_probs:
        p = np.array(list(genre_probs.values()), dtype=np.float64)
        heads.append((HeadSpec("genre", "genre", tuple(genre_probs), threshold),
                      np.zeros((n, len(p))), np.log(p / (1 - p))))
    if emotion_probs:
        p = np.array(list(emotion_probs.values()), dtype=np.float64)
        heads.append((HeadSpec("emotion", "emotion", tuple(emotion_probs)),
                      np.zeros((n, len(p))), np.log(p)))
    return build_model(path, heads, **kw)


def musicnn_sized_model(path: Path, n_genres: int = 15, n_emotions: int = 4) -> Path:
    """A model with musicnn's input and roughly its cost (about 0.8 M parameters), for
    benchmarks before a converted backbone exists: 3 convolution blocks (the backbone, beside
    ``path``) then two heads (``path``)."""
    f = MUSICNN_FEATURES
    rng = np.random.default_rng(0)
    inp = helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", f.n_frames, f.n_mels])
    nodes = [helper.make_node("Unsqueeze", ["mel", "ax1"], ["x0"])]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    channels = [1, 64, 128, 256]
    for i in range(3):
        w = rng.normal(0, 0.05, (channels[i + 1], channels[i], 5, 5)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"cw{i}"))
        nodes += [
            helper.make_node("Conv", [f"x{i}", f"cw{i}"], [f"c{i}"], pads=[2, 2, 2, 2]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
            helper.make_node("MaxPool", [f"r{i}"], [f"x{i + 1}"], kernel_shape=[4, 2],
                             strides=[4, 2]),
        ]
    nodes.append(helper.make_node("GlobalAveragePool", ["x3"], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["embedding"]))
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 256])
    layout = EmbeddingLayout("embedding", 256, ("gap",))
    backbone = _save(helper.make_graph(nodes, "musicnn_sized", [inp], [out], inits),
                     path.parent / "musicnn-sized-backbone.onnx",
                     backbone_metadata("musicnn-sized", "bench", SR, 3.0, f, layout))
    specs = [HeadSpec("genre", "genre", tuple(f"g{i}" for i in range(n_genres)), 0.2),
             HeadSpec("emotion", "emotion", tuple(f"e{i}" for i in range(n_emotions)))]
    heads = [(s, rng.normal(0, 0.1, (256, len(s.labels))), np.zeros(len(s.labels)))
             for s in specs]
    return head_file(path, backbone, heads, "musicnn-sized", "bench")
