"""Aggregation and decisions on models whose outputs are known."""

from __future__ import annotations

import numpy as np
import pytest

import onnx_models as om
from audiogen import make_audio, signal, write_audio
from tagger.model import load_models
from tagger.predict import Analyzer, aggregate
from tagger.result import decide_emotion, decide_genres


def test_decide_genres_threshold_order_and_cap():
    labels = ["a", "b", "c", "d"]
    probs = np.array([0.19999, 0.2, 0.9, 0.5], np.float32)
    assert [l for l, _ in decide_genres(labels, probs, 0.2)] == ["c", "d", "b"]
    assert [l for l, _ in decide_genres(labels, probs, 0.2, max_genres=2)] == ["c", "d"]
    assert decide_genres(labels, probs, 0.95) == []


def test_decide_emotion_is_argmax():
    assert decide_emotion(["calm", "sad", "happy"], np.array([0.2, 0.5, 0.3]))[0] == "sad"


def test_aggregate_is_the_clip_mean():
    timeline = np.array([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5]], np.float32)
    np.testing.assert_allclose(aggregate(timeline), [0.3, 0.7], rtol=1e-6)


def test_constant_model_decisions_end_to_end(tmp_path):
    om.constant_model(tmp_path / "m.onnx",
                      genre_probs={"Rock": 0.6, "Jazz": 0.25, "Blues": 0.15},
                      emotion_probs={"calm": 0.1, "sad": 0.7, "happy": 0.2})
    analyzer = Analyzer(load_models(tmp_path, device="cpu"))
    result = analyzer.analyze(make_audio(tmp_path / "a.flac", seconds=5.0, sr=22050))
    assert [l for l, _ in result.genres] == ["Rock", "Jazz"]
    assert result.genres[0][1] == pytest.approx(0.6, abs=1e-5)
    assert result.emotion[0] == "sad" and result.emotion[1] == pytest.approx(0.7, abs=1e-5)
    assert result.clips == 5
    assert result.heads["genre"].timeline.shape == (5, 3)
    # a command-line threshold overrides the model's, a cap limits the count
    analyzer = Analyzer(load_models(tmp_path, device="cpu"), threshold=0.1, max_genres=2)
    result = analyzer.analyze(tmp_path / "a.flac")
    assert [l for l, _ in result.genres] == ["Rock", "Jazz"]
    analyzer.threshold = 0.1
    analyzer.max_genres = None
    assert len(analyzer.analyze(tmp_path / "a.flac").genres) == 3


def test_model_threshold_from_metadata_is_used(tmp_path):
    om.constant_model(tmp_path / "m.onnx", genre_probs={"Rock": 0.6, "Jazz": 0.25},
                      threshold=0.5)
    result = Analyzer(load_models(tmp_path)).analyze(make_audio(tmp_path / "a.wav", 2.0))
    assert [l for l, _ in result.genres] == ["Rock"]


def test_band_model_hears_the_frequency(tmp_path):
    analyzer = Analyzer(load_models(om.band_model(tmp_path / "m.onnx")))
    for freq, genre, mood in ((200.0, "Low", "calm"), (6000.0, "High", "tense")):
        path = make_audio(tmp_path / f"{int(freq)}.ogg", seconds=4.0, sr=44100, freq=freq)
        result = analyzer.analyze(path)
        assert result.genres[0][0] == genre
        assert result.emotion[0] == mood


def test_timeline_follows_the_music(tmp_path):
    sr = 22050
    low, high = signal(3.0, sr, freq=200.0), signal(3.0, sr, freq=6000.0)
    path = write_audio(tmp_path / "two.flac", np.concatenate([low, high]), sr)
    result = Analyzer(load_models(om.band_model(tmp_path / "m.onnx"))).analyze(path)
    timeline = result.heads["genre"].timeline
    assert result.clip_starts.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert timeline[:3, 0].min() > 0.5 and timeline[3:, 2].min() > 0.5
    data = result.to_dict(timeline=True)
    assert len(data["timeline"]["genre"]) == 6


def test_a_decoding_error_mid_file_reaches_the_caller(tmp_path):
    from tagger.audio import AudioError

    path = make_audio(tmp_path / "a.flac", seconds=40.0, sr=22050, kind="noise")
    data = bytearray(path.read_bytes())
    data[len(data) // 2:] = b"\x00" * (len(data) - len(data) // 2)
    path.write_bytes(bytes(data))
    analyzer = Analyzer(load_models(om.band_model(tmp_path / "m.onnx")))
    try:
        result = analyzer.analyze(path)
    except AudioError as err:
        assert "\n" not in str(err)
    else:
        assert 0 < result.clips < 40
