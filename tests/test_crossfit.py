"""The learning's arithmetic: the cross-validated figures describe the head that is shipped.

Gaussian clusters stand in for clip embeddings; the head is fitted by scikit-learn, exported
by skl2onnx and run by onnxruntime, and must give the probabilities the cross-validation
computed, with every genre deciding at its chosen operating point.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tagger.learn.crossfit import (LearnError, Settings, _clip_logits, _Clips, _sigmoid,
                                   _softmax, fit_task, wilson)
from tagger.learn.examples import Examples
from tagger.learn.export import convert

DIM = 8


def examples(task: str, n_labels: int, artists: int = 12, per_artist: int = 4,
             seed: int = 0) -> Examples:
    """Each artist plays one label; a track's clips scatter around its label's centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (n_labels, DIM))
    ex = Examples(task, [], [], [], [])
    for a in range(artists):
        k = a % n_labels
        for t in range(per_artist):
            clips = centres[k] + rng.normal(0, 1.0, (int(rng.integers(3, 9)), DIM))
            ex.paths.append(f"/m/{a}/{t}.flac")
            ex.labels.append([f"L{k}"])
            ex.groups.append(f"artist:{a}")
            ex.clips.append(clips.astype(np.float16))
    return ex


def onnx_probs(learned, clips: np.ndarray) -> np.ndarray:
    model = convert(learned, DIM)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"embedding": clips.astype(np.float32)})[0]


@pytest.mark.parametrize("task,n_labels", [("genre", 3), ("genre", 1), ("emotion", 2),
                                           ("emotion", 3)])
def test_the_shipped_head_computes_what_was_judged(task, n_labels):
    ex = examples(task, max(n_labels, 2))
    if n_labels == 1:  # one genre learned: the other's tracks each carry a label of their own
        ex.labels = [["L0"] if labels == ["L0"] else [f"one-off {i}"]
                     for i, labels in enumerate(ex.labels)]
    learned = fit_task(ex, Settings(min_tracks=6, threshold=0.25))
    assert sorted(learned.labels) == [f"L{k}" for k in range(n_labels)]
    assert all(f.learned and f.precision >= 0.9 for f in learned.figures if f.tracks >= 6)
    clips = _Clips.of(ex.clips)
    logits = _clip_logits(learned.estimator, clips, n_labels)
    want = _sigmoid(logits) if task == "genre" else _softmax(logits)
    np.testing.assert_allclose(onnx_probs(learned, clips.rows), want, atol=1e-5)
    if task == "genre":  # each genre decides at its operating point: threshold is the head's
        decided = clips.mean(want) >= learned.threshold
        truth = np.array([[lab in labels for lab in learned.labels] for labels in ex.labels])
        assert (decided == truth).mean() > 0.95


def test_a_label_no_sound_predicts_is_refused():
    ex = examples("genre", 2)
    rng = np.random.default_rng(5)
    for labels in ex.labels:
        if rng.random() < 0.4:
            labels.append("Coin")
    learned = fit_task(ex, Settings(min_tracks=6))
    coin = next(f for f in learned.figures if f.label == "Coin")
    assert not coin.learned and "Coin" not in learned.labels
    assert coin.reason.startswith(("precision", "never written"))


def test_nothing_to_learn_from():
    ex = examples("genre", 2, artists=1)
    with pytest.raises(LearnError, match="one artist"):
        fit_task(ex, Settings(min_tracks=2))
    with pytest.raises(LearnError, match="no track"):
        fit_task(Examples("genre", [], [], [], []), Settings())


def test_wilson_interval():
    assert wilson(0, 0) is None
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.490, abs=1e-3) and hi == pytest.approx(0.943, abs=1e-3)
