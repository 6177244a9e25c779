"""The bundled default models: they load, say everything about themselves, and listen."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from audiogen import signal, write_audio
from tagger.features import MUSICNN_FEATURES
from tagger.model import default_models_dir, load_models
from tagger.predict import Analyzer
from trainer.bundle.plausibility import misfires
from trainer.vocabulary import display_name, has_separator

MOODS = ["happy", "tense", "sad", "calm"]


def test_bundled_models_load_with_complete_metadata():
    files = sorted(default_models_dir().glob("*.onnx"))
    assert files, "no bundled model"
    assert sum(f.stat().st_size for f in files) <= 25 * 1024 * 1024
    models = load_models(device="cpu")
    assert set(models.identities) == {"genre", "emotion"}
    backbone = models.backbone  # one backbone: it runs once per clip for both heads
    assert backbone.sample_rate == 16000 and backbone.clip_seconds == 3.0
    assert backbone.features == MUSICNN_FEATURES
    assert backbone.identity.name == "MSD_musicnn" and backbone.embedding.dim == 200
    heads = {h.task: h for h, _ in models.specs}
    assert list(heads["emotion"].labels) == MOODS
    genres = heads["genre"].labels
    assert "Classical" in genres
    # one genre is one tag value: no separator that ID3v2.3 or a player splits on
    assert not [g for g in genres if has_separator(g)]
    assert 0.0 < heads["genre"].threshold < 1.0
    for identity in models.identities.values():
        assert identity.name == "genreml-4q" and identity.version == "2.0.0"
    # each head names the backbone it was trained on by its digest
    assert {m.backbone_sha256 for m in models.heads} == {backbone.identity.sha256}
    card = (default_models_dir() / "MODEL_CARD.md").read_text()
    metrics = json.loads((default_models_dir() / "metrics.json").read_text())
    # every shipped label passed the vocabulary rule on the test split, and the card says so
    assert [display_name(g) for g in metrics["test"]["shipped"]] == list(genres)
    assert all(metrics["test"]["verdicts"][g] is None for g in metrics["test"]["shipped"])
    for label in genres:
        assert f"| {label}" in card
    # and none fires on most tracks of a real soundtrack of a kind it does not describe
    assert set(metrics["soundtracks"]) >= {"wesnoth-orchestral", "singularity-ambient"}
    assert not set(misfires(metrics["soundtracks"])) & set(genres)


def _music_like(kind: str, seconds: float = 12.0, sr: int = 22050) -> np.ndarray:
    """A gentle slow arpeggio or a loud distorted noisy pulse."""
    t = np.arange(int(seconds * sr)) / sr
    if kind == "gentle":
        notes = 220.0 * 2 ** (np.array([0, 4, 7, 12]) / 12)
        freq = notes[(t * 1.0).astype(int) % 4]
        y = 0.2 * np.sin(2 * np.pi * freq * t) * np.exp(-3 * (t % 1.0))
    else:
        rng = np.random.default_rng(0)
        y = np.clip(3 * (rng.normal(0, 0.5, len(t)) + np.sign(np.sin(2 * np.pi * 55 * t))),
                    -1, 1) * (0.6 + 0.4 * (np.sin(2 * np.pi * 4 * t) > 0))
    return y.astype(np.float32)[:, None]


def test_bundled_models_give_sensible_output(tmp_path):
    analyzer = Analyzer(load_models(device="cpu"))
    results = {}
    for kind in ("gentle", "harsh"):
        path = write_audio(tmp_path / f"{kind}.flac", _music_like(kind), 22050)
        results[kind] = r = analyzer.analyze(path)
        emotion = r.heads["emotion"]
        assert np.isclose(emotion.probs.sum(), 1.0, atol=1e-4)
        assert ((r.heads["genre"].probs >= 0) & (r.heads["genre"].probs <= 1)).all()
        assert r.clips == 4 and r.heads["genre"].timeline.shape[0] == 4
    gentle, harsh = (results[k].heads["emotion"].prob_dict() for k in ("gentle", "harsh"))
    # a soft arpeggio is calmer, and distorted noise more tense, than the other
    assert gentle["calm"] + gentle["sad"] > harsh["calm"] + harsh["sad"]
    assert harsh["tense"] > gentle["tense"]


def test_analyze_uses_the_bundled_models_by_default(tmp_path):
    path = write_audio(tmp_path / "a.mp3", signal(7.0, 44100, kind="chirp"), 44100)
    proc = subprocess.run([sys.executable, "-m", "tagger.cli", "analyze", "--json", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["models"]["genre"].startswith("genreml-4q@2.0.0:")
    assert data["emotion"]["label"] in MOODS
