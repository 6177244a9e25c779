"""Real audio files for tests: numpy signals encoded by real codecs (libsndfile, ffmpeg)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

# extension -> (soundfile format, subtype); None means "encode with ffmpeg"
FORMATS: dict[str, tuple[str, str] | None] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aiff": ("AIFF", "PCM_16"),
    "m4a": None,
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def signal(seconds: float, sr: int = 22050, channels: int = 1, kind: str = "tone",
           freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A test signal ``[samples, channels]`` in [-0.5, 0.5]: ``tone``, ``noise``, ``chirp``
    or ``silence``."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    if kind == "tone":
        y = 0.4 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 3 * freq * t)
    elif kind == "noise":
        y = np.random.default_rng(seed).uniform(-0.5, 0.5, n)
    elif kind == "chirp":
        y = 0.5 * np.sin(2 * np.pi * (100 + 2000 * t / max(seconds, 1e-9)) * t)
    elif kind == "silence":
        y = np.zeros(n)
    else:
        raise ValueError(kind)
    y = y.astype(np.float32)
    return np.stack([y * (1 - 0.2 * c) for c in range(channels)], axis=1)


def write_audio(path: Path | str, data: np.ndarray, sr: int) -> Path:
    """Encode ``data`` ``[samples, channels]`` into ``path``; the codec follows the extension."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    spec = FORMATS[ext]
    if spec is not None and not (ext == "opus" and sr not in OPUS_RATES):
        data = np.asarray(data).reshape(len(data), -1)
        with sf.SoundFile(path, "w", sr, data.shape[1], format=spec[0], subtype=spec[1]) as f:
            for at in range(0, len(data), 1 << 16):  # libsndfile's vorbis encoder crashes on
                f.write(data[at:at + (1 << 16)])    # one write of a minute or more
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is needed to encode test files (apt-get install ffmpeg)")
    wav = path.with_suffix(".src.wav")
    sf.write(wav, data, sr, subtype="PCM_16")
    codec = {"m4a": ["-c:a", "aac", "-b:a", "128k"], "opus": ["-c:a", "libopus"]}[ext]
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(wav), *codec, str(path)], check=True)
    wav.unlink()
    return path


def make_audio(path: Path | str, seconds: float = 5.0, sr: int = 22050, channels: int = 1,
               kind: str = "tone", **kw) -> Path:
    """Generate and encode a test file in one call."""
    return write_audio(path, signal(seconds, sr, channels, kind, **kw), sr)
