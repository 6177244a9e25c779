"""The shared log-mel function."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest

from tagger.features import MUSICNN_FEATURES, FeatureSettings, log_mel

SR = 16000


def test_musicnn_shape_and_dtype():
    clips = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 3 * SR)).astype(np.float32)
    out = log_mel(clips, SR)
    assert out.shape == (3, 187, 96) and out.dtype == np.float32


def test_matches_librosa_reference_for_one_clip():
    y = np.random.default_rng(1).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=256, n_mels=96,
                                         fmax=8000.0)
    expected = np.log10(1 + 10000 * mel).T[:187]
    np.testing.assert_allclose(log_mel(y, SR)[0], expected, rtol=1e-4, atol=1e-4)


def test_batch_equals_one_by_one():
    clips = np.random.default_rng(2).normal(0, 0.2, (4, 3 * SR)).astype(np.float32)
    batch = log_mel(clips, SR)
    for i in range(4):
        np.testing.assert_allclose(batch[i], log_mel(clips[i], SR)[0], rtol=1e-5, atol=1e-5)


def test_loud_input_stays_finite():
    # musicnn's float16 log overflows on loud bins; ours must not
    y = np.sign(np.sin(np.linspace(0, 2000 * np.pi, 3 * SR))).astype(np.float32)
    out = log_mel(y, SR)
    assert np.isfinite(out).all()


def test_db_compression_and_padding_to_n_frames():
    s = FeatureSettings(n_fft=1024, hop_length=512, n_mels=64, fmax=11025.0, log="db",
                        n_frames=50)
    y = np.random.default_rng(3).normal(0, 0.1, 22050).astype(np.float32)  # 44 frames
    out = log_mel(y, 22050, s)
    assert out.shape == (1, 50, 64)
    np.testing.assert_array_equal(out[0, 44], out[0, 49])  # edge padded


def test_settings_round_trip_and_validation():
    s = FeatureSettings.from_dict(json.loads(MUSICNN_FEATURES.to_json()))
    assert s == MUSICNN_FEATURES
    with pytest.raises(ValueError, match="log compression"):
        FeatureSettings(log="ln")
    with pytest.raises(ValueError, match="unknown feature settings"):
        FeatureSettings.from_dict({"n_fft": 512, "window": "hann"})
    with pytest.raises(ValueError, match="Nyquist"):
        log_mel(np.zeros(16000, np.float32), 8000, MUSICNN_FEATURES)
