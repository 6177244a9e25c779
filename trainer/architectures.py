"""Keras models: a log-mel CNN trained from scratch, and dense heads on frozen embeddings.

The last layer of every model is named after its task (``genre`` or ``emotion``), which becomes
the ONNX output name. Genre heads end in one sigmoid per label; emotion heads in a softmax (or
sigmoids when the emotion labels are multi-label, e.g. Emotify ``binary``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .export import _quiet_tf

_quiet_tf()
import keras  # noqa: E402  (after silencing TensorFlow's start-up logging)

log = logging.getLogger(__name__)

__all__ = ["build_cnn", "build_head", "compile_model", "filters_for", "label_weights",
           "weighted_binary_crossentropy"]


def filters_for(first: int = 8, blocks: int = 5) -> tuple[int, ...]:
    """Filters per block, doubling from ``first``: ``(8, 16, 32, 64, 128)`` by default."""
    if first < 1 or blocks < 1:
        raise ValueError("--filters and --blocks must be positive")
    return tuple(first * 2 ** i for i in range(blocks))


def _output(x: "keras.KerasTensor", n_labels: int, task: str, sigmoid: bool,
            dropout: float) -> "keras.KerasTensor":
    x = keras.layers.Dropout(dropout)(x)
    activation = "sigmoid" if sigmoid else "softmax"
    return keras.layers.Dense(n_labels, activation=activation, name=task)(x)


def build_cnn(n_frames: int, n_mels: int, n_labels: int, task: str, sigmoid: bool,
              filters: Sequence[int] = (8, 16, 32, 64, 128), kernel: int = 5,
              dropout: float = 0.2) -> "keras.Model":
    """A log-mel CNN: per block Conv2D (``kernel`` x ``kernel``), BatchNorm, ReLU, 2x2 max-pool;
    then global average pooling, dropout and the dense output layer.

    Parameters
    ----------
    n_frames, n_mels : int
        Patch shape; the input is ``mel`` ``[batch, n_frames, n_mels]``.
    n_labels : int
        Output width.
    task : {"genre", "emotion"}
        Name of the output layer.
    sigmoid : bool
        One sigmoid per label (genre heads, multi-label emotion) or a softmax.
    filters : sequence of int
        Filters per block (its length is the number of blocks).
    """
    inputs = keras.Input((n_frames, n_mels), name="mel")
    x = keras.layers.Reshape((n_frames, n_mels, 1))(inputs)
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, kernel, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
        # "same" pooling keeps a dimension of 1 at 1, so small patches take any block count
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _output(x, n_labels, task, sigmoid, dropout), name="cnn")


def build_head(dim: int, n_labels: int, task: str, sigmoid: bool,
               hidden: Sequence[int] = (256,), dropout: float = 0.3) -> "keras.Model":
    """A dense head on frozen clip embeddings ``embedding`` ``[batch, dim]``: BatchNorm (the
    pooled backbone outputs are not normalised), then per hidden layer Dense, ReLU, dropout."""
    inputs = keras.Input((dim,), name="embedding")
    x = keras.layers.BatchNormalization()(inputs)
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _output(x, n_labels, task, sigmoid, 0.0), name="head")


def label_weights(targets: np.ndarray, cap: float = 10.0) -> np.ndarray:
    """"Balanced" weights per label, ``mean positives / positives of the label``, clipped to
    ``[1/cap, cap]`` so a label with a handful of examples cannot dominate the loss."""
    positives = targets.sum(axis=0)
    weights = positives.mean() / np.maximum(positives, 1.0)
    return np.clip(weights, 1.0 / cap, cap).astype(np.float32)


def weighted_binary_crossentropy(pos_weight: np.ndarray):
    """Binary cross-entropy whose positive terms are scaled per label.

    Keras' ``class_weight`` turns a target row into one class by argmax, which is wrong for
    multi-label targets; scaling the positive terms balances rare labels and leaves the
    all-negative examples their full say.
    """
    w = keras.ops.convert_to_tensor(pos_weight, dtype="float32")

    def loss(y_true, y_pred):
        p = keras.ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        terms = w * y_true * keras.ops.log(p) + (1.0 - y_true) * keras.ops.log(1.0 - p)
        return -keras.ops.mean(terms, axis=-1)

    return loss


def compile_model(model: "keras.Model", sigmoid: bool, learning_rate: float = 1.5e-3,
                  pos_weight: np.ndarray | None = None) -> "keras.Model":
    """Adam and the task's loss: (weighted) binary cross-entropy for sigmoid outputs,
    categorical cross-entropy for softmax."""
    if sigmoid:
        loss = (weighted_binary_crossentropy(pos_weight) if pos_weight is not None
                else keras.losses.BinaryCrossentropy())
        metrics = [keras.metrics.AUC(multi_label=True, name="auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy()
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    return model
