"""The clip budget: which clips of a track are analysed, decoded by seek, and how a budgeted
analysis relates to the full one. Real encoded files, real tiny ONNX models."""

from __future__ import annotations

import numpy as np
import pytest

import onnx_models as om
from audiogen import make_audio, signal, write_audio
from cli_library import make_library, tag
from tagger.budget import AUTO, ClipBudget, decision_margin, grid_indices
from tagger.model import load_models
from tagger.predict import Analyzer

ALL = ClipBudget.parse("all")


@pytest.mark.parametrize("n", [1, 2, 7, 12, 13, 40, 97, 300])
@pytest.mark.parametrize("k", [1, 3, 12, 32])
def test_grid_indices_are_the_centres_of_equal_parts(n, k):
    idx = grid_indices(n, k)
    assert len(idx) == min(n, k) and len(set(idx.tolist())) == len(idx)
    assert (np.diff(idx) > 0).all() and idx[0] >= 0 and idx[-1] < n
    if k < n:  # the centre of each of k equal parts of the track is in a chosen clip
        parts = np.floor((idx + 0.5) * k / n).astype(int)
        assert parts.tolist() == list(range(k))
    assert grid_indices(n, None).tolist() == list(range(n))


def test_parse():
    assert ClipBudget.parse("auto") == AUTO and str(AUTO) == "auto"
    assert ClipBudget.parse("ALL").clips is None and str(ALL) == "all"
    assert ClipBudget.parse("20") == ClipBudget(20, 0, 0.0)
    for bad in ("0", "-3", "many", "1.5"):
        with pytest.raises(ValueError):
            ClipBudget.parse(bad)


def test_cli_refuses_a_bad_budget(tmp_path, capsys):
    music, models, cache = make_library(tmp_path, m4a=False)
    with pytest.raises(SystemExit) as exit_:
        tag(capsys, music, models, cache, "--clips", "lots")
    assert exit_.value.code == 2 and "--clips takes auto, all or a number" in \
        capsys.readouterr().err


@pytest.fixture(scope="module")
def band(tmp_path_factory):
    folder = tmp_path_factory.mktemp("band")
    return load_models(om.band_model(folder / "band.onnx"), device="cpu")


@pytest.fixture(scope="module")
def long_track(tmp_path_factory):
    """60 one-second clips of a chirp sweeping the bands: every clip says something else."""
    folder = tmp_path_factory.mktemp("long")
    y = np.concatenate([signal(10.0, 44100, kind="chirp") for _ in range(6)])
    return write_audio(folder / "sweep.flac", y, 44100)


@pytest.mark.parametrize("suffix", [".flac", ".mp3", ".ogg"])
def test_budgeted_clips_are_the_full_analysis_clips_at_the_centres(tmp_path, band, suffix):
    y = np.concatenate([signal(10.0, 44100, kind="chirp") for _ in range(4)])
    path = write_audio(tmp_path / f"sweep{suffix}", y, 44100)
    full = Analyzer(band, budget=ALL).analyze(path)
    n = full.clips
    budgeted = Analyzer(band, budget=ClipBudget.parse("7")).analyze(path)
    chosen = grid_indices(n, 7)
    np.testing.assert_allclose(budgeted.clip_starts, full.clip_starts[chosen])
    for task in ("genre", "emotion"):
        # seek-decoded clips equal the streamed decode's to soxr's float rounding (1e-6 on
        # samples, tests/test_segments.py); float16 embeddings round alike, or one step apart
        np.testing.assert_allclose(budgeted.heads[task].timeline,
                                   full.heads[task].timeline[chosen], atol=2e-3)
    assert budgeted.embedding.clips.shape == (7, om.FEATURES.n_mels)


def test_all_equals_the_full_stream_and_a_short_track_is_analysed_whole(tmp_path, band,
                                                                         long_track):
    full = Analyzer(band, budget=ALL).analyze(long_track)
    assert full.clips == 60
    short = make_audio(tmp_path / "short.flac", seconds=5.0, sr=44100, kind="chirp")
    a, b = (Analyzer(band, budget=budget).analyze(short) for budget in (ALL, AUTO))
    assert a.clips == b.clips == 5  # fewer clips than the budget: every clip
    for task in ("genre", "emotion"):
        np.testing.assert_allclose(a.heads[task].probs, b.heads[task].probs, atol=2e-3)


def test_auto_widens_only_where_a_decision_is_close(tmp_path, long_track):
    """Constant heads put every decision exactly where asked: far from the threshold the
    first 12 clips decide; within the margin, 32 more are analysed."""
    clear = om.constant_model(tmp_path / "a" / "m.onnx", genre_probs={"x": 0.9, "y": 0.05},
                              emotion_probs={"calm": 0.8, "sad": 0.2}, threshold=0.5)
    close = om.constant_model(tmp_path / "b" / "m.onnx", genre_probs={"x": 0.53, "y": 0.05},
                              emotion_probs={"calm": 0.8, "sad": 0.2}, threshold=0.5)
    results = {name: Analyzer(load_models(m, device="cpu")).analyze(long_track)
               for name, m in (("clear", clear), ("close", close))}
    assert decision_margin(results["clear"]) > AUTO.margin > decision_margin(results["close"])
    assert results["clear"].clips == 12
    expected = np.union1d(grid_indices(60, 12), grid_indices(60, 32))
    assert results["close"].clips == len(expected)
    np.testing.assert_allclose(results["close"].clip_starts, expected * 1.0)


def test_silent_chosen_clips_are_left_out_and_an_all_silent_pick_looks_everywhere(tmp_path,
                                                                                  band):
    """A track silent but for one stretch: the chosen clips that fall in the silence are not
    analysed, and if every chosen clip is silent the whole grid is searched."""
    sr = 44100
    y = np.zeros(120 * sr, np.float32)  # the band model's clips last 1 s: 120 clips
    y[int(63.2 * sr):int(63.8 * sr)] = signal(0.6, sr, kind="chirp")[:, 0]  # in clip 63 only
    path = write_audio(tmp_path / "mostly_silent.flac", y, sr)
    assert grid_indices(120, 3).tolist() == [20, 60, 100]  # all silent here
    result = Analyzer(band, budget=ClipBudget.parse("3")).analyze(path)
    assert result.clip_starts.tolist() == [63.0]  # the whole grid was searched
    every = Analyzer(band, budget=ClipBudget.parse("120")).analyze(path)  # by seek
    assert every.clip_starts.tolist() == [63.0]  # the 119 silent clips are left out
