"""Embedding-first: a new head re-tags a library from the cached clip embeddings without
decoding a single file; only a new backbone decodes again; an unchanged library is not even
opened.

Real encoded files (flac, mp3, m4a), real tiny ONNX backbones and heads, the real cache and
``genreml tag`` run in-process. Decodes are counted where every decoder starts: libsndfile's
``SoundFile`` and PyAV's ``open`` (the real ones still run).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import onnx_models as om
from cli_library import make_library, summary, tag
from tagger.cache import Cache
from tagger.model import HeadSpec, load_models
from tagger.predict import Analyzer
from tagger.tags import read_tags

pytestmark = pytest.mark.timeout(180)


def _new_heads(models: Path, folder: Path) -> Path:
    """A second version of the band model's heads (the genre head listens to other bands, so
    decisions change), on the same backbone file, in ``folder``."""
    folder.mkdir()
    (backbone,) = models.glob("backbone-*.onnx")
    shutil.copy(backbone, folder)
    n = om.FEATURES.n_mels
    genre = HeadSpec("genre", "genre", tuple(om.GENRES), 0.2)
    emotion = HeadSpec("emotion", "emotion", tuple(om.EMOTIONS))
    flipped = om.band_weights(n, 3)[:, ::-1].copy()  # Low <-> High
    return om.head_file(folder / "band.onnx", folder / backbone.name,
                        [(genre, flipped, np.full(3, -3.0)),
                         (emotion, np.ones((n, 2), np.float32), np.zeros(2))], version="2")


def test_new_head_retags_from_cached_embeddings_without_decoding(tmp_path, capsys, decodes):
    music, models, cache = make_library(tmp_path)
    rc, out, _ = tag(capsys, music, models, cache)
    assert rc == 0 and summary(out)["analysed"] == 3
    before = {p.name: read_tags(p).genres for p in music.iterdir()}
    assert before["low.flac"] == ["Low"] and before["high.mp3"] == ["High"]
    assert decodes  # the first run decoded every file

    v2 = _new_heads(models, tmp_path / "v2")
    decodes.clear()
    rc, out, _ = tag(capsys, music, v2, cache, "--stale-only")
    assert rc == 0 and decodes == []  # not one audio file decoded
    assert summary(out)["reheaded"] == 3 and summary(out)["tagged"] == 3
    after = {p.name: read_tags(p).genres for p in music.iterdir()}
    assert after["low.flac"] == ["High"] and after["high.mp3"] == ["Low"]  # v2's decisions

    # what the cache now holds equals a fresh analysis with the new heads
    fresh = Analyzer(load_models(v2, device="cpu"))
    with Cache(cache) as db:
        for path in music.iterdir():
            stored = db.get(path)
            again = fresh.analyze(path)
            for task in ("genre", "emotion"):
                assert stored.heads[task].model == again.heads[task].model
                np.testing.assert_allclose(stored.heads[task].probs, again.heads[task].probs,
                                           rtol=1e-5)  # float32 rounding of the heads
                np.testing.assert_allclose(stored.heads[task].timeline,
                                           again.heads[task].timeline, atol=1e-3)  # float16

    decodes.clear()
    rc, out, _ = tag(capsys, music, v2, cache)  # nothing new: nothing decoded, nothing written
    assert rc == 0 and decodes == [] and summary(out)["cached"] == 3
    assert summary(out)["tagged"] == 0


def test_a_new_backbone_decodes_again(tmp_path, capsys, decodes):
    music, models, cache = make_library(tmp_path, m4a=False)
    assert tag(capsys, music, models, cache)[0] == 0
    # same heads' shape, another backbone (other features): the embeddings are stale
    other = tmp_path / "other"
    features = om.FEATURES.__class__(**{**om.FEATURES.__dict__, "fmax": 7000.0})
    om.band_model(other / "band.onnx", features=features, version="2")
    decodes.clear()
    rc, out, _ = tag(capsys, music, other, cache, "--stale-only")
    assert rc == 0 and summary(out)["analysed"] == 2 and "reheaded" not in summary(out)
    assert sorted(Path(p).name for p in decodes) >= ["high.mp3", "low.flac"]
    with Cache(cache) as db:
        sha = load_models(other, device="cpu").backbone.identity.sha256
        assert all(db.embedding(p, sha) is not None for p in music.iterdir())


_OPENED: list[str] | None = None  # while a list: every path Python's open() is given


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None:
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: this one records only while _OPENED is set


@pytest.fixture
def opened(decodes, monkeypatch) -> list[str]:
    """Every path opened from now on: by a decoder, or by Python (mutagen reads tags so)."""
    global _OPENED
    _OPENED = decodes
    yield decodes
    _OPENED = None


def _audio(paths: list[str], music: Path) -> set[str]:
    names = {p.name for p in music.iterdir()}
    return {Path(os.fsdecode(p)).name for p in paths if Path(os.fsdecode(p)).name in names}


def test_unchanged_rerun_opens_no_audio_file(tmp_path, capsys, opened):
    music, models, cache = make_library(tmp_path)
    assert tag(capsys, music, models, cache)[0] == 0
    opened.clear()
    rc, out, _ = tag(capsys, music, models, cache)
    assert rc == 0 and summary(out) == {"tagged": 0, "unchanged": 3, "analysed": 0,
                                        "cached": 3, "skipped": 0, "failed": 0}
    assert _audio(opened, music) == set()  # not read, not decoded: size and mtime said enough
    # a file touched since is read again (and found unchanged); the others still are not
    os.utime(music / "low.flac", ns=(1, 1))
    opened.clear()
    rc, out, _ = tag(capsys, music, models, cache)
    assert rc == 0 and summary(out)["unchanged"] == 3 and _audio(opened, music) == {"low.flac"}
    # other settings may write otherwise: every file is read once, then trusted again
    opened.clear()
    assert tag(capsys, music, models, cache, "--policy", "merge")[0] == 0
    assert _audio(opened, music) == {"low.flac", "high.mp3", "mid.m4a"}
    opened.clear()
    assert tag(capsys, music, models, cache, "--policy", "merge")[0] == 0
    assert _audio(opened, music) == set()
    # --print shows what the files hold: it reads them
    assert tag(capsys, music, models, cache, "--policy", "merge", "--print")[0] == 0
    assert _audio(opened, music) == {"low.flac", "high.mp3", "mid.m4a"}
