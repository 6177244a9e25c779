"""The shared log-mel function."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest

from tagger.features import (MUSICNN_FEATURES, FeatureSettings, hz_to_mel, log_mel,
                              mel_filterbank, mel_to_hz)

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


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (16000, 512, 96, 0.0, 8000.0), (22050, 1024, 64, 30.0, 11025.0), (44100, 2048, 128, 20.0, 16000.0),
])
def test_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == (1 + n_fft // 2, n_mels)
    np.testing.assert_allclose(ours.T, theirs, rtol=1e-5, atol=1e-8)


def test_mel_scale_round_trips_and_matches_librosa():
    hz = np.array([0.0, 440.0, 999.0, 1000.0, 4000.0, 22050.0])
    np.testing.assert_allclose(hz_to_mel(hz), librosa.hz_to_mel(hz), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("settings, sr, n_samples", [
    (MUSICNN_FEATURES, 16000, 3 * 16000),
    (FeatureSettings(n_fft=1024, hop_length=512, n_mels=64, fmin=30.0, fmax=11025.0, log="db",
                     n_frames=40), 22050, 20000),
    (FeatureSettings(n_fft=2048, hop_length=441, n_mels=128, fmax=20000.0, n_frames=101),
     44100, 44100),
])
def test_batch_matches_librosa_melspectrogram(settings, sr, n_samples):
    clips = np.random.default_rng(4).normal(0, 0.2, (3, n_samples)).astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=clips, sr=sr, n_fft=settings.n_fft, hop_length=settings.hop_length,
        n_mels=settings.n_mels, fmin=settings.fmin, fmax=settings.fmax, power=2.0)
    if settings.log == "db":
        expected = librosa.power_to_db(mel, ref=1.0, top_db=None)
    else:
        expected = np.log10(1 + settings.log_multiplier * mel)
    expected = np.swapaxes(expected, 1, 2)[:, : settings.n_frames]
    out = log_mel(clips, sr, settings)
    assert out.shape == (3, settings.n_frames, settings.n_mels)
    np.testing.assert_allclose(out[:, : expected.shape[1]], expected, rtol=1e-4, atol=1e-4)


def test_runtime_does_not_import_librosa():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from tagger.predict import Analyzer; "
            "from tagger.features import log_mel; log_mel(np.ones(48000, np.float32), 16000); "
            "print('librosa' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
