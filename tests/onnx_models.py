"""Small real ONNX models for tests, built with ``onnx.helper`` and run by onnxruntime.

``band_model`` has known behaviour: the mean log-mel energy of the frames goes through a fixed
linear layer, so a tone's frequency decides which label wins. ``constant_model`` returns fixed
probabilities whatever the input, for exact threshold and argmax checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tagger.features import MUSICNN_FEATURES, FeatureSettings
from tagger.model import HeadSpec, metadata_for

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


def build_model(path: Path, heads: list[tuple[HeadSpec, np.ndarray, np.ndarray]],
                features: FeatureSettings = FEATURES, sample_rate: int = SR,
                clip_seconds: float = 1.0, name: str = "test", version: str = "1",
                metadata: dict[str, str] | None = None) -> Path:
    """Mean over frames -> per head ``sigmoid``/``softmax(x @ W + b)``; ``W`` is
    ``[n_mels, n_labels]``. ``metadata`` replaces the generated metadata when given."""
    inp = helper.make_tensor_value_info("mel", TensorProto.FLOAT,
                                        ["batch", features.n_frames, features.n_mels])
    nodes = [helper.make_node("ReduceMean", ["mel"], ["pooled"], axes=[1], keepdims=0)]
    inits: list = []
    outputs = []
    for spec, w, b in heads:
        act = "sigmoid" if spec.task == "genre" else "softmax"
        n, i = _head_nodes(spec.output, "pooled", w, b, act)
        nodes += n
        inits += i
        outputs.append(helper.make_tensor_value_info(spec.output, TensorProto.FLOAT,
                                                     ["batch", len(spec.labels)]))
    graph = helper.make_graph(nodes, "genreml_test", [inp], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = metadata if metadata is not None else metadata_for(
        name, version, sample_rate, clip_seconds, features, [h for h, _, _ in heads])
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


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
    benchmarks before a converted backbone exists: 3 convolution blocks then two heads."""
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
    nodes.append(helper.make_node("Flatten", ["gap"], ["pooled"]))
    outputs = []
    specs = [HeadSpec("genre", "genre", tuple(f"g{i}" for i in range(n_genres)), 0.2),
             HeadSpec("emotion", "emotion", tuple(f"e{i}" for i in range(n_emotions)))]
    for spec in specs:
        k = len(spec.labels)
        n, i = _head_nodes(spec.output, "pooled", rng.normal(0, 0.1, (256, k)), np.zeros(k),
                           "sigmoid" if spec.task == "genre" else "softmax")
        nodes += n
        inits += i
        outputs.append(helper.make_tensor_value_info(spec.output, TensorProto.FLOAT, ["batch", k]))
    graph = helper.make_graph(nodes, "musicnn_sized", [inp], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in metadata_for("musicnn-sized", "bench", SR, 3.0, f, specs).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, path)
    return path
