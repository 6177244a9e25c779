"""Small heads on frozen clip embeddings: fit with scikit-learn, calibrate, export to ONNX.

A head is a stack of dense layers (:class:`DenseHead`) ending in a sigmoid (genre: one per
label) or a softmax (mood). Training sees one row per track, the mean of its clip embeddings;
the tagger applies the head to every clip and averages the clip probabilities. Calibration
(:func:`calibrate`) is fitted on exactly that clip average, so the written threshold means what
it says at run time.

Every preprocessing step (standardisation, the calibration's scale and shift) is folded into
the dense layers' weights, so the exported graph is MatMul/Add/Relu and one activation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tagger.predict import aggregate

__all__ = ["DenseHead", "Layer", "activate", "calibrate_logits", "clip_average", "fit_logistic",
           "fit_mlp", "head_to_onnx", "track_means"]


@dataclasses.dataclass(frozen=True)
class Layer:
    """``x @ weight + bias``; ``weight`` is ``[n_in, n_out]``."""

    weight: np.ndarray
    bias: np.ndarray


@dataclasses.dataclass(frozen=True)
class DenseHead:
    """Dense layers with ReLU between them and ``activation`` after the last.

    Attributes
    ----------
    layers : tuple of Layer
    activation : {"sigmoid", "softmax"}
    """

    layers: tuple[Layer, ...]
    activation: str

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Pre-activation outputs ``[n, n_labels]`` of embeddings ``x`` ``[n, dim]``."""
        h = np.asarray(x, dtype=np.float64)
        for i, layer in enumerate(self.layers):
            h = h @ layer.weight + layer.bias
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, n_labels]``."""
        return activate(self.logits(x), self.activation)

    def columns(self, keep: Sequence[int]) -> DenseHead:
        """The head with only the outputs ``keep`` (a sigmoid head's outputs are independent,
        so each kept probability stays exactly what it was)."""
        if self.activation != "sigmoid":
            raise ValueError("only a sigmoid head's outputs can be dropped")
        last = self.layers[-1]
        keep = list(keep)
        return DenseHead((*self.layers[:-1], Layer(last.weight[:, keep], last.bias[keep])),
                         self.activation)

    def with_output(self, scale: np.ndarray, shift: np.ndarray) -> DenseHead:
        """The head whose last layer's logits become ``scale * logit + shift``."""
        last = self.layers[-1]
        folded = Layer(last.weight * scale, last.bias * scale + shift)
        return DenseHead((*self.layers[:-1], folded), self.activation)


def activate(z: np.ndarray, activation: str) -> np.ndarray:
    """``sigmoid`` or ``softmax`` (over the last axis) of logits ``z``."""
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def track_means(clips: Sequence[np.ndarray]) -> np.ndarray:
    """One row per track: the mean of its clip embeddings ``[n_tracks, dim]``."""
    return np.stack([np.asarray(c, dtype=np.float64).mean(axis=0) for c in clips])


def clip_average(head: DenseHead, clips: Sequence[np.ndarray]) -> np.ndarray:
    """Track probabilities as the tagger computes them: the head on every clip, averaged."""
    return np.stack([aggregate(head.predict(c)) for c in clips])


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


def _fold_scaler(layer: Layer, mean: np.ndarray, std: np.ndarray) -> Layer:
    """``((x - mean) / std) @ W + b`` as one layer on raw ``x``."""
    weight = layer.weight / std[:, None]
    return Layer(weight, layer.bias - mean @ weight)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, multi_label: bool) -> DenseHead:
    """A standardised L2 logistic regression: one-vs-rest sigmoids or a multinomial softmax.

    Parameters
    ----------
    x : np.ndarray [shape=(n, dim)]
        Track-mean embeddings.
    y : np.ndarray
        Multi-hot ``[n, n_labels]`` when ``multi_label``, else class indices ``[n]``.
    c : float
        Inverse regularisation strength.
    multi_label : bool
    """
    from sklearn.linear_model import LogisticRegression

    mean, std = _standardise(x)
    z = (x - mean) / std
    if multi_label:
        weights, biases = [], []
        for j in range(y.shape[1]):
            lr = LogisticRegression(C=c, max_iter=5000)
            lr.fit(z, y[:, j])
            weights.append(lr.coef_[0])
            biases.append(lr.intercept_[0])
        layer = Layer(np.array(weights).T, np.array(biases))
        return DenseHead((_fold_scaler(layer, mean, std),), "sigmoid")
    lr = LogisticRegression(C=c, max_iter=5000).fit(z, y)
    if list(lr.classes_) != list(range(len(lr.classes_))):
        raise ValueError("every class must occur in the training data")
    return DenseHead((_fold_scaler(Layer(lr.coef_.T.copy(), lr.intercept_.copy()), mean, std),),
                     "softmax")


def fit_mlp(x: np.ndarray, y: np.ndarray, alpha: float, multi_label: bool,
            hidden: int = 64, seed: int = 0) -> DenseHead:
    """A one-hidden-layer ReLU network (scikit-learn's ``MLPClassifier``, L2 ``alpha``, early
    stopping off: the data are small and ``alpha`` is chosen by cross-validation)."""
    from sklearn.neural_network import MLPClassifier

    mean, std = _standardise(x)
    net = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=2000,
                        random_state=seed).fit((x - mean) / std, y)
    w1, w2 = net.coefs_
    b1, b2 = net.intercepts_
    if not multi_label and w2.shape[1] == 1:
        raise ValueError("a softmax head needs at least three classes")
    first = _fold_scaler(Layer(w1, b1), mean, std)
    return DenseHead((first, Layer(w2, b2)), "sigmoid" if multi_label else "softmax")


def calibrate_logits(logits: Sequence[np.ndarray], y: np.ndarray,
                     fit_scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-label Platt scaling of a sigmoid head, fitted on the clip-averaged probabilities.

    Finds ``a, b`` per label minimising the cross-entropy of
    ``mean_clips(sigmoid(a * logit + b))`` against ``y``. Fit it on out-of-fold logits (each
    track scored by a head that did not see it) so it corrects what unseen music gets.

    Parameters
    ----------
    logits : sequence of np.ndarray
        Per track, the head's clip logits ``[n_clips, n_labels]``.
    y : np.ndarray [shape=(n_tracks, n_labels)]
    fit_scale : bool
        False: only the shift is fitted (the scale stays 1).

    Returns
    -------
    scale, shift : np.ndarray [shape=(n_labels,)]
    """
    from scipy.optimize import minimize

    n_labels = y.shape[1]
    lengths = np.array([len(z) for z in logits])
    stacked = np.concatenate(logits)
    owner = np.repeat(np.arange(len(logits)), lengths)
    scale, shift = np.ones(n_labels), np.zeros(n_labels)
    for j in range(n_labels):
        target = y[:, j]
        if target.min() == target.max():
            continue  # nothing to calibrate against

        def loss(ab: np.ndarray, j: int = j, target: np.ndarray = target) -> float:
            a = ab[0] if fit_scale else 1.0
            p = activate(a * stacked[:, j] + ab[-1], "sigmoid")
            mean = np.bincount(owner, p) / lengths
            mean = np.clip(mean, 1e-7, 1 - 1e-7)
            ce = -(target * np.log(mean) + (1 - target) * np.log(1 - mean))
            return float(np.mean(ce) + 1e-4 * (a - 1) ** 2)

        start = np.array([1.0, 0.0]) if fit_scale else np.array([0.0])
        best = minimize(loss, start, method="Nelder-Mead",
                        options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 400})
        scale[j], shift[j] = (best.x[0], best.x[1]) if fit_scale else (1.0, best.x[0])
    return scale, shift


def head_to_onnx(head: DenseHead, task: str, opset: int = 17) -> onnx.ModelProto:
    """The head as an ONNX graph: input ``embedding`` ``[batch, dim]``, output ``task``.

    The graph's parameters are float32; the head's float64 arithmetic agrees within ~1e-6.
    """
    nodes, inits = [], []
    current = "embedding"
    for i, layer in enumerate(head.layers):
        w, b = f"{task}_w{i}", f"{task}_b{i}"
        inits += [numpy_helper.from_array(layer.weight.astype(np.float32), w),
                  numpy_helper.from_array(layer.bias.astype(np.float32), b)]
        nodes += [helper.make_node("MatMul", [current, w], [f"{task}_mm{i}"]),
                  helper.make_node("Add", [f"{task}_mm{i}", b], [f"{task}_z{i}"])]
        current = f"{task}_z{i}"
        if i < len(head.layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"{task}_h{i}"]))
            current = f"{task}_h{i}"
    if head.activation == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [current], [task]))
    else:
        nodes.append(helper.make_node("Softmax", [current], [task], axis=-1))
    dim = head.layers[0].weight.shape[0]
    width = head.layers[-1].weight.shape[1]
    graph = helper.make_graph(
        nodes, f"{task}_head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(task, TensorProto.FLOAT, ["batch", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model
