"""``genreml tag``, ``show`` and ``playlist`` over real files, a real cache and real models."""

from __future__ import annotations

import json
import os
import stat

import pytest

import onnx_models as om
from audiogen import make_audio
from cli_library import make_library, tag, summary
from tagger.cli import main
from tagger.tags import read_tags, write_tags


@pytest.fixture()
def lib(tmp_path):
    return make_library(tmp_path)




def test_tag_writes_caches_and_skips_on_rerun(lib, capsys):
    music, models, cache = lib
    rc, out, _ = tag(capsys, music, models, cache)
    assert rc == 0
    assert summary(out) == {"tagged": 3, "unchanged": 0, "analysed": 3, "cached": 0,
                            "skipped": 0, "failed": 0}
    assert read_tags(music / "low.flac").genres == ["Low"]
    assert read_tags(music / "low.flac").mood == "calm"
    assert read_tags(music / "high.mp3").genres == ["High"]
    assert read_tags(music / "mid.m4a").mood == "tense"
    rc, out, _ = tag(capsys, music, models, cache)
    assert summary(out) == {"tagged": 0, "unchanged": 3, "analysed": 0, "cached": 3,
                            "skipped": 0, "failed": 0}
    # a moved file is found by its audio fingerprint, not analysed again
    (music / "sub").mkdir()
    os.rename(music / "low.flac", music / "sub" / "renamed.flac")
    rc, out, _ = tag(capsys, music, models, cache, "-v")
    assert "renamed.flac: Low | calm [unchanged, moved]" in out
    assert summary(out)["analysed"] == 0


def test_dry_run_writes_nothing_and_prints_the_change(lib, capsys):
    music, models, cache = lib
    before = {p.name: p.read_bytes() for p in music.iterdir()}
    rc, out, _ = tag(capsys, music, models, cache, "--dry-run")
    assert rc == 0
    assert "genre: [] -> ['Low']" in out and "mood: None -> 'calm'" in out
    assert summary(out)["tagged"] == 3
    assert {p.name: p.read_bytes() for p in music.iterdir()} == before


@pytest.mark.parametrize("policy,genres,mood", [
    ("fill", ["Ambient"], "calm"),
    ("merge", ["Ambient", "Low"], "calm"),
    ("force", ["Low"], "calm"),
])
def test_policy_on_curated_genres(lib, capsys, policy, genres, mood):
    music, models, cache = lib
    write_tags(music / "low.flac", ["Ambient"], None, "force")
    rc, _, _ = tag(capsys, music, models, cache, "--policy", policy)
    assert rc == 0
    assert read_tags(music / "low.flac").genres == genres
    assert read_tags(music / "low.flac").mood == mood


def test_bad_and_read_only_files_are_reported_and_the_rest_is_tagged(lib, capsys):
    music, models, cache = lib
    (music / "broken.flac").write_bytes(b"fLaC but not really" * 30)
    locked = make_audio(music / "locked.wav", seconds=2.0, freq=200.0)
    locked.chmod(stat.S_IRUSR | stat.S_IRGRP)
    rc, out, err = tag(capsys, music, models, cache)
    assert rc == 1
    assert summary(out)["failed"] == 2 and summary(out)["tagged"] == 3
    lines = [l for l in err.splitlines() if l.startswith("genreml: ")]
    assert any("broken.flac: not decodable audio" in l for l in lines)
    assert any("locked.wav" in l and "read-only" in l for l in lines)
    assert read_tags(locked).genres == []


def test_new_model_version_makes_results_stale(lib, capsys, tmp_path):
    music, models, cache = lib
    tag(capsys, music, models, cache, "--no-write")
    om.band_model(models / "band.onnx", version="2")
    make_audio(music / "new.flac", seconds=2.0, freq=200.0)  # not cached: not stale either
    rc, out, _ = tag(capsys, music, models, cache, "--stale-only", "-v")
    assert rc == 0
    # the same backbone: version 2's heads run on the cached embeddings
    assert summary(out) == {"tagged": 3, "unchanged": 0, "analysed": 0, "reheaded": 3,
                            "cached": 0, "skipped": 0, "failed": 0}
    assert "new.flac" not in out
    rc, out, _ = tag(capsys, music, models, cache, "--stale-only")
    assert summary(out)["analysed"] == 0 and "reheaded" not in summary(out)


def test_show_and_plot(lib, capsys, tmp_path):
    music, models, cache = lib
    tag(capsys, music, models, cache)
    png = tmp_path / "timeline.png"
    rc = main(["show", "--cache", str(cache), str(music / "low.flac"), "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "genre: model test@1:" in out and "mood: calm" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["show", "--json", "--cache", str(cache), str(music / "high.mp3")])
    data = json.loads(capsys.readouterr().out)
    assert data["genres"][0]["label"] == "High" and len(data["timeline"]["genre"]) == 4
    rc = main(["show", "--cache", str(cache), str(tmp_path / "unknown.flac")])
    assert rc == 1


def test_playlist_from_the_cache(lib, capsys, tmp_path):
    music, models, cache = lib
    tag(capsys, music, models, cache)
    out_file = tmp_path / "tense.m3u"
    rc = main(["playlist", "--cache", str(cache), "--mood", "tense", "--min-prob", "0.5",
               "-o", str(out_file), str(music)])
    assert rc == 0
    lines = out_file.read_text().splitlines()
    assert lines[0] == "#EXTM3U"
    paths = [l for l in lines if not l.startswith("#")]
    assert sorted(os.path.basename(p) for p in paths) == ["high.mp3", "mid.m4a"]
    assert all(l.startswith("#EXTINF:4,") for l in lines[1::2])
    rc = main(["playlist", "--cache", str(cache), "--mood", "tense", "--genre", "High"])
    out = capsys.readouterr().out.splitlines()
    assert [os.path.basename(l) for l in out if not l.startswith("#")] == ["high.mp3"]
    rc = main(["playlist", "--cache", str(cache), "--mood", "calm", "--min-prob", "0.99",
               str(tmp_path / "elsewhere")])
    assert rc == 1


def test_a_cache_from_a_newer_genreml_is_a_usage_error(lib, capsys):
    import sqlite3

    from tagger.cache import SCHEMA_VERSION, Cache

    music, models, cache = lib
    Cache(cache).close()
    with sqlite3.connect(cache) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    capsys.readouterr()
    for argv in (["tag", "--models", str(models), "--cache", str(cache), str(music)],
                 ["status", "--cache", str(cache)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("genreml: ") and "newer genreml" in err and "\n" not in err
