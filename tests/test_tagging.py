"""The Tagger road: a file replaced while it is analysed never gets the old file's result;
stale temporary copies are cleaned once per folder. Real files, real models."""

from __future__ import annotations

import os
import time

import pytest

import onnx_models as om
from audiogen import make_audio
from tagger.audio import AudioError
from tagger.cache import Cache
from tagger.model import load_models
from tagger.predict import Analyzer
from tagger.tagging import MAX_ATTEMPTS, Tagger
from tagger.tags import TEMP_GLOB, read_tags

SR = 22050


class ReplacingAnalyzer(Analyzer):
    """A real Analyzer that, when the first clip batch of an analysis is done, replaces the
    file by rename with the next of ``replacements`` (as a download manager or an editor
    saving would)."""

    def __init__(self, models, replacements):
        super().__init__(models)
        self.replacements = list(replacements)
        self.calls = 0

    def analyze(self, path, on_clips=None, **kw):
        self.calls += 1
        fired = []

        def after_batch(n):
            if not fired and self.replacements:
                fired.append(n)
                os.replace(self.replacements.pop(0), path)

        return super().analyze(path, after_batch, **kw)


@pytest.fixture
def models(tmp_path):
    return load_models(om.band_model(tmp_path / "band.onnx"))


def _song(tmp_path, name, freq):
    # 200 one-second clips: several batches, so the replacement lands mid-analysis
    return make_audio(tmp_path / name, seconds=200.0, sr=SR, freq=freq)


@pytest.mark.parametrize("write", [False, True])
def test_file_replaced_during_analysis_gets_its_own_result(tmp_path, models, write):
    song = _song(tmp_path, "song.flac", 300.0)  # "Low"
    incoming = _song(tmp_path, ".incoming.flac", 6000.0)  # "High"
    with Cache(tmp_path / "cache.db") as cache:
        tagger = Tagger(models, cache, write=write)
        tagger.analyzer = ReplacingAnalyzer(models, [incoming])
        outcome = tagger.tag(song)
        assert tagger.analyzer.calls == 2  # the first analysis was overtaken and dropped
        assert [g for g, _ in outcome.result.genres] == ["High"]
        st = os.stat(song)
        info = cache.info(song)
        stored_genres = cache.get(song).heads["genre"]
        assert stored_genres.prob_dict()["High"] > stored_genres.prob_dict()["Low"]
        if write:
            assert read_tags(song).genres == ["High"]
            assert (info["size"], info["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
            assert cache.summary()["tagged"] == 1
        else:
            assert (info["size"], info["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
            assert cache.summary()["tagged"] == 0


def test_file_that_keeps_changing_fails(tmp_path, models):
    song = _song(tmp_path, "song.flac", 300.0)
    others = [_song(tmp_path, f".next{i}.flac", 300.0 + 1000 * i) for i in range(MAX_ATTEMPTS)]
    with Cache(tmp_path / "cache.db") as cache:
        tagger = Tagger(models, cache, write=False)
        tagger.analyzer = ReplacingAnalyzer(models, others)
        with pytest.raises(AudioError, match="file keeps changing"):
            tagger.tag(song)
        assert cache.summary()["tracks"] == 0  # nothing cached under a stat it was not for


def test_stale_temporary_copies_are_cleaned_once_per_folder(tmp_path, models):
    song = make_audio(tmp_path / "a.flac", seconds=3.0, sr=SR)
    make_audio(tmp_path / "b.flac", seconds=3.0, sr=SR, freq=5000.0)
    stale = tmp_path / TEMP_GLOB.replace("*", "killed")
    stale.write_bytes(b"half a copy")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    with Cache(tmp_path / "cache.db") as cache:
        tagger = Tagger(models, cache)
        tagger.tag(song)
        assert not stale.exists()
        stale.write_bytes(b"again")
        os.utime(stale, (old, old))
        tagger.tag(tmp_path / "b.flac")  # same folder, same Tagger: not listed again
        assert stale.exists()
        Tagger(models, cache).tag(song)  # a new run cleans again
        assert not stale.exists()
