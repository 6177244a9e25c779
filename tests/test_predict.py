"""Aggregation and decisions on models whose outputs are known."""

from __future__ import annotations

import numpy as np
import pytest

import onnx_models as om
from audiogen import make_audio, signal, write_audio
from tagger.budget import ClipBudget
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


# --------------------------------------------------------------------------- the pipeline


def test_streamed_analysis_equals_clip_by_clip_prediction(tmp_path):
    """Decoding ahead in a thread and switching thread counts mid-file change no number."""
    from tagger.audio import ClipStream

    path = make_audio(tmp_path / "a.mp3", seconds=100.0, sr=44100, kind="noise")
    models = load_models(om.musicnn_sized_model(tmp_path / "m.onnx"), device="cpu", threads=2)
    analyzer = Analyzer(models, budget=ClipBudget.parse("all"))
    result = analyzer.analyze(path)
    clips = np.concatenate([b.clips for b in ClipStream(path, 16000, 3.0)])
    expected = analyzer.predict_clips(clips)
    assert result.clips == len(clips) == 33
    for task in ("genre", "emotion"):
        np.testing.assert_allclose(result.heads[task].timeline, expected[task], atol=1e-5)


def test_fewer_threads_is_a_second_session_with_the_same_outputs(tmp_path):
    model = load_models(om.musicnn_sized_model(tmp_path / "m.onnx"), device="cpu",
                        threads=2).backbone
    assert model.threads == 2 and model.session_for(None) is model.session
    assert model.session_for(2) is model.session and model.session_for(5) is model.session
    one = model.session_for(1)
    assert one is not model.session and model.session_for(1) is one  # built once
    assert one.get_session_options().intra_op_num_threads == 1
    mel = np.random.default_rng(0).uniform(0, 3, (3, 187, 96)).astype(np.float32)
    full, single = model.embed(mel), model.embed(mel, threads=1)
    assert full.shape == (3, 256)
    np.testing.assert_allclose(full, single, atol=1e-5)


def test_prefetch_keeps_order_and_stops_when_full():
    import itertools
    import time

    from tagger.predict import Prefetch

    produced = []

    def numbers():
        for i in itertools.count():
            produced.append(i)
            yield i

    with Prefetch(numbers(), depth=4) as ahead:
        deadline = time.monotonic() + 10
        while ahead.working and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ahead.working and len(produced) == 4  # waits with a full queue
        it = iter(ahead)
        assert [next(it) for _ in range(3)] == [0, 1, 2]  # half empty: refills to full
        deadline = time.monotonic() + 10
        while (ahead.working or len(produced) < 7) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(produced) == 7 and [next(it) for _ in range(4)] == [3, 4, 5, 6]
    assert not ahead._thread.is_alive()


def test_prefetch_raises_the_producer_error_after_its_items_and_closes_the_source():
    from tagger.predict import Prefetch

    closed = []

    def failing():
        try:
            yield 1
            yield 2
            raise ValueError("bad block")
        finally:
            closed.append(True)

    got = []
    with pytest.raises(ValueError, match="bad block"), Prefetch(failing(), depth=8) as ahead:
        for item in ahead:
            got.append(item)
    assert got == [1, 2] and closed == [True]


def test_prefetch_close_mid_stream_ends_the_thread():
    import itertools

    from tagger.predict import Prefetch

    closed = []

    def endless():
        try:
            yield from itertools.count()
        finally:
            closed.append(True)

    ahead = Prefetch(endless(), depth=2)
    assert next(iter(ahead)) == 0
    ahead.close()
    assert not ahead._thread.is_alive() and closed == [True]
