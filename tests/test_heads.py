"""Heads on embeddings: scikit-learn fits folded into dense layers, ONNX export, calibration,
grouped selection and the vocabulary rule."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("sklearn", reason="the train extra is not installed")

from trainer.bundle.choose import CLASSICAL_PROBABILITY, classical_shift, cross_fit_threshold
from trainer.head_selection import Candidate, folds_by_group, score_candidates
from trainer.heads import (calibrate_logits, clip_average, fit_logistic, fit_mlp, head_to_onnx,
                           track_means)
from trainer.vocabulary import ALLMUSIC_NAMES, ShipRule, display_name, has_separator


def _data(n=240, dim=12, labels=3, seed=0):
    """Tracks of 3-6 clips whose labels follow a few embedding directions."""
    rng = np.random.default_rng(seed)
    clips = [rng.normal(0, 1, (rng.integers(3, 7), dim)) + rng.normal(0, 2, dim) * 0.5
             for _ in range(n)]
    x = track_means(clips)
    w = rng.normal(0, 1, (dim, labels))
    y = (x @ w + rng.normal(0, 0.3, (n, labels)) > 0.4).astype(float)
    return clips, x, y


def _onnx(head, task, x):
    session = ort.InferenceSession(head_to_onnx(head, task).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run([task], {"embedding": x.astype(np.float32)})[0]


def test_logistic_head_is_scikit_learns_pipeline_folded():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _, x, y = _data()
    head = fit_logistic(x, y, 0.1, multi_label=True)
    scaled = StandardScaler().fit(x)
    for j in range(y.shape[1]):
        lr = LogisticRegression(C=0.1, max_iter=5000).fit(scaled.transform(x), y[:, j])
        want = lr.predict_proba(scaled.transform(x))[:, 1]
        assert np.allclose(head.predict(x)[:, j], want, atol=1e-6)
    mood = fit_logistic(x, y.argmax(1), 0.1, multi_label=False)
    assert np.allclose(mood.predict(x).sum(1), 1.0)
    assert np.allclose(_onnx(mood, "emotion", x), mood.predict(x), atol=1e-5)


def test_mlp_head_matches_scikit_learn_and_its_onnx_export():
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    _, x, y = _data()
    head = fit_mlp(x, y, alpha=1.0, multi_label=True, hidden=16, seed=3)
    assert len(head.layers) == 2
    scaled = StandardScaler().fit(x)
    net = MLPClassifier(hidden_layer_sizes=(16,), alpha=1.0, max_iter=2000,
                        random_state=3).fit(scaled.transform(x), y)
    assert np.allclose(head.predict(x), net.predict_proba(scaled.transform(x)), atol=1e-6)
    assert np.allclose(_onnx(head, "genre", x), head.predict(x), atol=1e-5)


def test_clip_average_is_the_taggers_aggregation():
    clips, x, y = _data(n=20)
    head = fit_logistic(x, y, 1.0, multi_label=True)
    got = clip_average(head, clips)
    assert np.allclose(got[4], head.predict(clips[4]).mean(0))
    assert not np.allclose(got, head.predict(x))  # the average of probabilities, not of clips


def test_platt_scaling_recovers_a_known_miscalibration():
    rng = np.random.default_rng(1)
    true_logit = rng.normal(0, 2, (3000, 1))
    y = (rng.random((3000, 1)) < 1 / (1 + np.exp(-true_logit))).astype(float)
    seen = [(true_logit[i:i + 1] - 1.0) / 3.0 for i in range(3000)]  # squashed and shifted
    scale, shift = calibrate_logits(seen, y)
    assert scale[0] == pytest.approx(3.0, rel=0.15) and shift[0] == pytest.approx(1.0, abs=0.2)
    only_shift = calibrate_logits(seen, y, fit_scale=False)
    assert only_shift[0][0] == 1.0


def test_classical_is_written_where_its_own_probability_reaches_the_stricter_point():
    labels = ["Jazz", "Classical"]
    shift = classical_shift(labels, 0.2)
    assert shift[0] == 0.0
    for p in (0.3, 0.45, 0.49, 0.51, 0.7):
        z = math.log(p / (1 - p)) + shift[1]
        assert (1 / (1 + math.exp(-z)) >= 0.2) == (p >= CLASSICAL_PROBABILITY)


def test_grouped_selection_keeps_artists_apart_and_ranks_candidates():
    clips, _, y = _data(n=200)
    groups = np.array([f"artist{i // 4}" for i in range(200)])
    folds = folds_by_group(groups, y[:, 0].astype(int), 5, seed=0)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    cands = [Candidate("logistic", 1.0), Candidate("logistic", 1e-5),
             Candidate("logistic", 1.0, calibrated=True)]
    scored = score_candidates(cands, clips, y, ["a", "b", "c"], folds, True)
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)
    best = {s.candidate: s for s in scored}
    # a regularisation that flattens every probability cannot beat a usable one
    assert best[cands[0]].score > best[cands[1]].score
    report = cross_fit_threshold(best[cands[0]].probs, y, folds)
    assert len(report["chosen_per_fold"]) == 5


def test_shipped_names_have_no_separator_and_follow_lastgenre():
    assert display_name("Pop/Rock") == "Pop Rock" and display_name("Rap") == "Hip Hop"
    assert display_name("Jazz") == "Jazz"
    for name in ALLMUSIC_NAMES.values():
        assert not has_separator(name)
    assert has_separator("Pop/Rock") and has_separator("Rock; Pop") and has_separator("a,b")
    with pytest.raises(ValueError):
        display_name("Rock/Pop")


def test_ship_rule_needs_ranking_precision_and_evidence():
    rule = ShipRule()
    assert rule.verdict(0.9, 0.6, 10, 8) is None
    assert "ROC-AUC" in rule.verdict(0.8, 0.9, 10, 8)
    assert "precision" in rule.verdict(0.95, 0.4, 10, 8)
    assert "test positives" in rule.verdict(0.99, 1.0, 3, 3)
    assert "written" in rule.verdict(0.95, 1.0, 10, 1)


def test_bootstrap_statistics_agree_with_scikit_learn():
    from trainer.bundle.report import bootstrap, genre_stats
    from trainer.evaluate import multi_label_metrics

    rng = np.random.default_rng(2)
    y = (rng.random((80, 4)) < 0.3).astype(float)
    y[:, 3] = 0  # a label without positives: recall, F1 and AUC undefined
    p = np.clip(y * 0.4 + rng.random((80, 4)) * 0.6, 0, 1)
    got = genre_stats(y, p, 0.3)
    want = multi_label_metrics(y, p, list("abcd"), 0.3)
    assert got[0] == pytest.approx(want["micro_f1"])
    assert got[1] == pytest.approx(want["macro_roc_auc"])
    for j, label in enumerate("abc"):
        row = want["per_label"][label]
        assert got[2 + 4 * j:6 + 4 * j] == pytest.approx(
            [row["precision"], row["recall"], row["f1"], row["roc_auc"]])
    assert np.isnan(got[2 + 4 * 3 + 1:2 + 4 * 3 + 4]).all()
    groups = np.repeat(np.arange(20), 4)
    ci = bootstrap(groups, lambda idx: genre_stats(y[idx], p[idx], 0.3), n=200)
    assert ci.shape == (2, len(got)) and ci[0, 0] <= got[0] <= ci[1, 0]


def test_soundtrack_check_reads_real_files_and_vetoes_labels_off_their_kind(tmp_path):
    from audiogen import make_audio
    from onnx_models import constant_model
    from trainer.bundle.plausibility import misfires, soundtrack_shares

    model = constant_model(tmp_path / "m.onnx", genre_probs={"Jazz": 0.9, "Classical": 0.6,
                                                             "Electronic": 0.1},
                           emotion_probs={"calm": 0.7, "tense": 0.3})
    root = tmp_path / "soundtracks"
    for folder, n in (("game-ambient", 3), ("other-orchestral", 2)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            make_audio(root / folder / f"t{i}.ogg", seconds=4.0)
    (root / "game-ambient" / "broken.ogg").write_bytes(b"OggS not really")
    shares = soundtrack_shares(model, root)
    ambient = shares["game-ambient"]
    assert ambient["tracks"] == 3 and len(ambient["skipped"]) == 1
    assert ambient["genres"] == {"Jazz": 1.0, "Classical": 1.0} and ambient["no_genre"] == 0.0
    assert ambient["moods"] == {"calm": 1.0}
    # Jazz describes neither kind; Classical may be written on orchestral music, not ambient
    assert set(misfires(shares)) == {"Jazz", "Classical"}
    assert "game-ambient" in misfires(shares)["Classical"]
    assert misfires({"x-orchestral": shares["other-orchestral"]}) == {
        "Jazz": "written on 100% of x-orchestral"}


def test_dropping_labels_keeps_the_others_exactly():
    clips, x, y = _data()
    head = fit_mlp(x, y, alpha=1.0, multi_label=True, hidden=8)
    kept = head.columns([2, 0])
    assert np.array_equal(kept.predict(x), head.predict(x)[:, [2, 0]])
    with pytest.raises(ValueError):
        fit_logistic(x, y.argmax(1), 1.0, multi_label=False).columns([0])


SHARED = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "4q" / "metadata.csv").is_file(),
                    reason="../shared/data (4Q, GTZAN classical) is not beside this clone")
def test_default_corpus_split_keeps_artists_and_gtzan_blocks_apart():
    from trainer.bundle.corpus import CLASSICAL, GTZAN_BLOCK, corpus_index

    index = corpus_index(SHARED / "4q", SHARED / "gtzan-classical", seed=0)
    parts = index.parts
    groups = {name: set(p.groups) for name, p in parts.items()}
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"] and not groups["validation"] & groups["test"]
    assert index.genres[-1] == CLASSICAL
    gtzan = {name: [g for g in p.groups if g.startswith("gtzan:")] for name, p in parts.items()}
    assert not gtzan["validation"] and gtzan["train"] and gtzan["test"]
    # GTZAN excerpts are Classical and nothing else, with no mood
    for part in parts.values():
        g = part.source == "gtzan"
        assert (part.genres[g, -1] == 1).all() and (part.genres[g, :-1] == 0).all()
        assert (part.mood[g] == -1).all() and (part.mood[~g] >= 0).all()
    assert len(gtzan["test"]) % GTZAN_BLOCK == 0
