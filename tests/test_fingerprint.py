"""Content fingerprints on real encoded files, and the "moved" match they drive in the Tagger:
never another song's result, never a partial download's, still a real move."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf

import onnx_models as om
from audiogen import make_audio, signal, write_audio
from tagger.cache import Cache
from tagger.fingerprint import (
    FINGERPRINT_VERSION,
    SEEK_VERSION,
    fingerprint,
    fingerprint_duration,
    same_size_class,
)
from tagger.model import load_models
from tagger.predict import Analyzer
from tagger.tagging import Tagger

SR = 22050


class CountingAnalyzer(Analyzer):
    """A real Analyzer that counts the files it analyses."""

    calls: list[str]

    def analyze(self, path, on_clips=None, **kw):
        self.calls.append(os.fsdecode(path))
        return super().analyze(path, on_clips, **kw)


@pytest.fixture
def tagger(tmp_path):
    models = load_models(om.band_model(tmp_path / "band.onnx"))
    with Cache(tmp_path / "cache.db") as cache:
        t = Tagger(models, cache, write=False)
        t.analyzer = CountingAnalyzer(models)
        t.analyzer.calls = []
        yield t


def silent_then(path: Path, freq: float, seconds: float = 30.0) -> Path:
    """11 s of digital silence, then a tone of ``freq``: two such songs open the same."""
    music = signal(seconds - 11.0, SR, channels=2, kind="tone", freq=freq)
    return write_audio(path, np.concatenate([signal(11.0, SR, channels=2, kind="silence"),
                                             music]), SR)


# --------------------------------------------------------------------------- the fingerprint


@pytest.mark.parametrize("ext", ["flac", "mp3", "ogg", "m4a"])
def test_fingerprint_ignores_tags_and_names_but_not_content(tmp_path, ext):
    a = make_audio(tmp_path / f"a.{ext}", seconds=40.0, sr=44100, channels=2, kind="noise",
                   seed=1)
    before = fingerprint(a)
    assert before.startswith((SEEK_VERSION if ext == "m4a" else FINGERPRINT_VERSION) + ":")
    assert fingerprint_duration(before) == pytest.approx(40.0, abs=0.05)
    tags = mutagen.File(a, easy=True)
    if tags.tags is None:
        tags.add_tags()
    tags["genre"] = ["Jazz"]
    tags["title"] = ["x" * 5000]  # the tag grows: offsets of the audio move
    tags.save()
    moved = a.rename(tmp_path / f"moved.{ext}")
    assert fingerprint(moved) == before
    other = make_audio(tmp_path / f"b.{ext}", seconds=40.0, sr=44100, channels=2, kind="noise",
                       seed=2)
    assert fingerprint(other) != before


@pytest.mark.parametrize("ext", ["flac", "mp3"])
def test_same_silent_opening_different_songs_differ(tmp_path, ext):
    a = silent_then(tmp_path / f"a.{ext}", 300.0)
    b = silent_then(tmp_path / f"b.{ext}", 5000.0)
    assert fingerprint(a) != fingerprint(b)


@pytest.mark.parametrize("ext", ["flac", "mp3", "ogg", "m4a"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_copy_has_another_fingerprint(tmp_path, ext, keep):
    full = make_audio(tmp_path / f"full.{ext}", seconds=40.0, sr=44100, kind="noise")
    data = full.read_bytes()
    part = tmp_path / f"part.{ext}"
    part.write_bytes(data[: int(len(data) * keep)])
    try:
        assert fingerprint(part) != fingerprint(full)
    except Exception as err:  # undecodable is fine too, as long as it says so in one line
        from tagger.audio import AudioError

        assert isinstance(err, AudioError) and "\n" not in str(err)


def test_short_file_is_hashed_whole(tmp_path):
    a = make_audio(tmp_path / "a.wav", seconds=3.0, sr=SR, kind="noise", seed=1)
    b = make_audio(tmp_path / "b.wav", seconds=3.0, sr=SR, kind="noise", seed=2)
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint_duration(fingerprint(a)) == 3.0


def test_non_utf8_names_are_fingerprinted_and_cached(tmp_path, tagger):
    src = make_audio(tmp_path / "src.flac", seconds=20.0, sr=SR, kind="noise")
    want = fingerprint(src)
    raw = os.fsencode(tmp_path) + b"/\xff\xfe caf\xe9.flac"
    os.rename(src, raw)
    assert fingerprint(raw) == want == fingerprint(os.fsdecode(raw))
    result, source = tagger.result_for(os.fsdecode(raw))
    assert source == "analysed"
    info = tagger.cache.info(os.fsdecode(raw))
    assert os.fsencode(info["path"]) == raw and info["fingerprint"] == want
    assert tagger.result_for(os.fsdecode(raw))[1] == "cache"
    assert tagger.analyzer.calls == [os.fsdecode(raw)]


def test_size_class():
    mib = 1 << 20
    assert same_size_class(10 * mib, 10 * mib + 700_000)  # a new cover picture
    assert same_size_class(10 * mib, 10 * mib - 4000)  # tags removed
    assert not same_size_class(10 * mib, 8 * mib)  # a download at 80%
    assert not same_size_class(3 * mib, 3 * mib // 2)


def test_old_fingerprints_never_match():
    assert fingerprint_duration("0123abcd:160000") is None  # the format before version 2
    assert fingerprint_duration(f"{FINGERPRINT_VERSION}:44100:2:88200:ab") == 2.0
    assert fingerprint_duration(f"{SEEK_VERSION}:44100:2:88200:ab") == 2.0
    assert fingerprint_duration("v9:44100:2:88200:ab") is None


def pcm16(seconds: float, sr: int, channels: int) -> np.ndarray:
    """Noise-like 16-bit samples from integer arithmetic alone: the same on every machine."""
    n = np.arange(int(seconds * sr), dtype=np.int64)
    x = (n * 7919 + (n * n) % 65521) % 65536 - 32768
    y = ((x * 3) // 4 + (n % 441) * 40 - 8820).clip(-32768, 32767)
    return np.stack([x, y][:channels], axis=1).astype(np.int16)


@pytest.mark.parametrize("name,seconds,sr,channels,want", [
    ("long.wav", 20.0, 22050, 2, "v2:22050:2:441000:023b9daa4efa92172216f17799d5f13b2b84577e"),
    ("long.flac", 20.0, 44100, 1, "v2:44100:1:882000:5c4bd55cb5674e9a5f7456544a385ca4f9736bd8"),
    ("short.flac", 5.0, 16000, 2, "v2:16000:2:80000:caf7f79b8a6d6bc77f304caabddcec77e811068b"),
])
def test_libsndfile_fingerprints_are_those_caches_hold(tmp_path, name, seconds, sr, channels,
                                                       want):
    """Values computed by genreml before segments.py (commit 1849c6f): segments read after a
    seek (the long files) and the whole track (the short one)."""
    path = tmp_path / name
    sf.write(path, pcm16(seconds, sr, channels), sr, subtype="PCM_16")
    assert fingerprint(path) == want


# --------------------------------------------------------------------------- the moved match


def test_second_song_with_the_same_silent_opening_is_analysed(tmp_path, tagger):
    a = silent_then(tmp_path / "a.flac", 300.0)
    first, source = tagger.result_for(a)
    assert source == "analysed"
    a.unlink()  # the first song is gone: a "move" is what the cache would look for
    b = silent_then(tmp_path / "b.flac", 6000.0)
    second, source = tagger.result_for(b)
    assert source == "analysed"
    assert tagger.analyzer.calls == [str(a), str(b)]
    assert [g for g, _ in first.genres] == ["Low"]
    assert [g for g, _ in second.genres] == ["High"]


def test_partial_download_is_not_the_complete_file(tmp_path, tagger):
    full = make_audio(tmp_path / "song.mp3", seconds=60.0, sr=44100, channels=2, freq=300.0)
    tagger.result_for(full)
    complete = full.read_bytes()
    moved = tmp_path / "done.mp3"
    os.rename(full, tmp_path / "away.mp3")
    (tmp_path / "away.mp3").unlink()
    moved.write_bytes(complete[: len(complete) * 9 // 10])
    _, source = tagger.result_for(moved)
    assert source == "analysed"
    assert len(tagger.analyzer.calls) == 2


def test_moved_file_is_found_without_analysis(tmp_path, tagger):
    a = make_audio(tmp_path / "a.flac", seconds=40.0, sr=44100, channels=2, kind="noise")
    want, _ = tagger.result_for(a)
    new = tmp_path / "sub" / "renamed.flac"
    new.parent.mkdir()
    shutil.move(a, new)
    got, source = tagger.result_for(new)
    assert source == "moved"
    assert tagger.analyzer.calls == [str(a)]  # no second analysis
    assert got.genres == want.genres
    assert tagger.result_for(new)[1] == "cache"  # relocated: the next run hits by path


def test_row_with_an_old_fingerprint_is_not_trusted(tmp_path, tagger):
    a = make_audio(tmp_path / "a.flac", seconds=20.0, sr=SR, kind="noise")
    result, _ = tagger.result_for(a)
    tagger.cache.store(result, "0123abcd:160000")  # as genreml 0.x stored it
    new = tmp_path / "b.flac"
    os.rename(a, new)
    assert tagger.result_for(new)[1] == "analysed"
