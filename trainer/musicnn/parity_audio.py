"""The audio a converted backbone is checked on: music-like synthetic clips, as log-mel.

Zeros or white noise would hide most conversion errors; these clips have tones, chords,
drums, chirps and noise at several levels, some near full scale (where musicnn's own float16
mel overflowed), and are computed as the tagger computes its features.
"""

from __future__ import annotations

import numpy as np

from tagger.features import MUSICNN_FEATURES, log_mel

from .checkpoint import CLIP_SECONDS, SAMPLE_RATE

__all__ = ["parity_features", "synthetic_clips"]


def synthetic_clips(n_clips: int = 8, seed: int = 0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Music-like 3-s test clips: tones, chords, drums, chirps and noise at several levels.

    Parameters
    ----------
    n_clips : int
        Number of clips; the kinds below repeat with fresh random parameters.
    seed : int
        Seed for the random parameters.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    np.ndarray [shape=(n_clips, 3 * sr), dtype=float32]
        Clips in [-1, 1]; some near full scale, where musicnn's float16 mel overflowed.
    """
    rng = np.random.default_rng(seed)
    n = int(CLIP_SECONDS * sr)
    t = np.arange(n) / sr
    clips = np.zeros((n_clips, n), dtype=np.float64)

    def drums() -> np.ndarray:
        y = np.zeros(n)
        beat = int(sr * 60 / rng.uniform(80, 160))
        for start in range(0, n, beat):
            m = min(n - start, sr // 4)
            tt = np.arange(m) / sr
            kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-tt * 30)) * tt)
            y[start:start + m] += kick * np.exp(-tt * 12)
            hat = start + beat // 2
            if hat < n:
                k = min(n - hat, sr // 20)
                y[hat:hat + k] += 0.3 * rng.standard_normal(k) * np.exp(-np.arange(k) / (sr * 0.01))
        return y

    for i in range(n_clips):
        kind = i % 6
        f0 = rng.uniform(80, 800)
        if kind == 0:  # harmonic tone with vibrato
            phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / sr
            y = sum(np.sin(k * phase) / k for k in range(1, 8))
        elif kind == 1:  # major chord with tremolo
            y = sum(np.sin(2 * np.pi * f0 * r * t) for r in (1, 1.26, 1.5))
            y *= 1 + 0.5 * np.sin(2 * np.pi * 3 * t)
        elif kind == 2:  # drums
            y = drums()
        elif kind == 3:  # chirp
            y = np.sin(2 * np.pi * (f0 * t + rng.uniform(200, 2000) * t**2 / (2 * CLIP_SECONDS)))
        elif kind == 4:  # brownish noise
            y = np.cumsum(rng.standard_normal(n))
            y -= np.convolve(y, np.ones(401) / 401, mode="same")
        else:  # drums under a bass line and a melody
            notes = f0 * 2 ** (rng.integers(0, 12, size=12) / 12)
            melody = np.sin(2 * np.pi * np.cumsum(np.repeat(notes, -(-n // 12))[:n]) / sr)
            y = drums() + 0.5 * melody + 0.5 * np.sin(2 * np.pi * f0 / 4 * t)
        y = y / (np.max(np.abs(y)) + 1e-12)
        clips[i] = y * rng.choice([0.99, 0.5, 0.1, 0.01])
    return clips.astype(np.float32)


def parity_features(n_clips: int = 8, seed: int = 0) -> np.ndarray:
    """Log-mel patches ``[n_clips, 187, 96]`` of :func:`synthetic_clips`, as the tagger
    computes them."""
    return log_mel(synthetic_clips(n_clips, seed), SAMPLE_RATE, MUSICNN_FEATURES)
