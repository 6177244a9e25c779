"""``genreml learn``: a personal head from a library's own labels, on real files.

A generated library whose genres are audible (tests/learn_library.py: a low drone, a high
chime, broadband hiss; six artists each), the first four artists of each genre tagged, run
through the real CLI with a small real ONNX model, scikit-learn and skl2onnx, and the real
cache. What is checked: learned labels come out right on the untagged tracks, well above
chance; a label with too few tracks, or one no sound predicts, is refused and reported; labels
genreml wrote itself are not learned from; curated files are not touched; re-learning re-tags
from the cache without decoding.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnx_models as om
from cli_library import run, summary
from learn_library import make_learn_library, tag_file
from tagger.tags import read_tags

pytestmark = pytest.mark.timeout(300)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def lib(tmp_path, monkeypatch):
    """``(tracks, models, cache, personal)`` with ``$XDG_DATA_HOME`` in ``tmp_path``."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    tracks = make_learn_library(tmp_path / "music", moods=True)
    models = tmp_path / "models"
    om.band_model(models / "band.onnx")
    return tracks, models, tmp_path / "cache.db", tmp_path / "xdg" / "genreml" / "personal"


def test_learned_genres_fill_the_untagged_tracks_and_leave_curated_ones(lib, capsys, tmp_path):
    tracks, models, cache, personal = lib
    music = tracks[0].path.parent.parent
    # genreml's own earlier writes on the untagged tracks: never truth
    const = tmp_path / "const"
    om.constant_model(const / "const.onnx", {"Bogus": 0.9}, {"calm": 0.6, "tense": 0.4})
    untagged = [t for t in tracks if not t.tagged]
    rc, _, err = run(capsys, "tag", "--models", const, "--cache", cache,
                     *sorted({t.path.parent for t in untagged}))
    assert rc == 0, err
    assert all(read_tags(t.path).genres == ["Bogus"] for t in untagged)
    # a label on too few tracks, and one no sound predicts (a third of each genre's artists)
    noisy = [t for t in tracks if t.tagged and t.artist.endswith(("0", "3"))]
    rare = [t for t in tracks if t.tagged and t.genre == "Chime" and t not in noisy][:4]
    for t in rare:
        tag_file(t.path, genre=[t.genre, "Rare"])
    for t in noisy:
        tag_file(t.path, genre=[t.genre, "Coin Flip"])
    curated = {t.path: digest(t.path) for t in tracks if t.tagged}

    rc, out, err = run(capsys, "learn", "--models", models, "--cache", cache,
                       "--min-tracks", 6, music)
    assert rc == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    for genre in ("Drone", "Chime", "Hiss"):
        assert rows[genre].rstrip().endswith("learned"), out
    assert "not learnable yet: 4 tracks (needs 6)" in rows["Rare"]
    assert "learned" not in rows["Coin"], out  # "Coin Flip": below the precision floor
    assert "Bogus" not in out and "18 tracks without a label" in out
    assert "18 labels genreml wrote left out" in out
    head = personal / "personal-genre.onnx"
    meta = {p.key: p.value for p in onnx.load(head).metadata_props}
    (spec,) = json.loads(meta["genreml.heads"])
    assert sorted(spec["labels"]) == ["Chime", "Drone", "Hiss"]
    learned = json.loads(meta["genreml.learned"])
    assert learned["tracks"] == 36 and learned["artists"] == 12
    assert learned["backbone_sha256"] == meta["genreml.backbone_sha256"]
    assert learned["learned_at"]
    for suffix in (".report.txt", ".report.json", ".report.png"):
        assert (personal / f"personal-genre{suffix}").stat().st_size > 0

    # both heads: the union, personal labels first; curated files untouched (fill)
    rc, out, err = run(capsys, "tag", "--models", models, "--heads", "both", "--cache", cache,
                       "--print", music)
    assert rc == 0, err
    right = 0
    for t in untagged:
        genres = read_tags(t.path).genres
        assert "Bogus" not in genres  # genreml's own old value is taken back
        assert genres and genres[0] in ("Drone", "Chime", "Hiss"), genres
        right += genres[0] == t.genre
    assert right >= 16, f"{right} of {len(untagged)} untagged tracks right (chance: 6)"
    assert {p: digest(p) for p in curated} == curated


def test_relearning_retags_from_the_cache_without_decoding(lib, capsys, decodes):
    tracks, models, cache, personal = lib
    music = tracks[0].path.parent.parent
    assert run(capsys, "learn", "--models", models, "--cache", cache, "--min-tracks", 6,
               music)[0] == 0
    rc, out, err = run(capsys, "tag", "--models", models, "--heads", "personal", "--cache",
                       cache, music)
    assert rc == 0, err
    first = (personal / "personal-genre.onnx").read_bytes()
    # the library grows: new tagged tracks arrive; learning again analyses only those
    grown = make_learn_library(music / "new", artists=1, tagged_artists=1, seed=1)
    decodes.clear()
    assert run(capsys, "learn", "--models", models, "--cache", cache, "--min-tracks", 6,
               music)[0] == 0
    assert decodes and set(decodes) <= {str(t.path) for t in grown}
    assert (personal / "personal-genre.onnx").read_bytes() != first
    # the new head re-tags what the old one tagged, from the cache: nothing is decoded
    decodes.clear()
    rc, out, err = run(capsys, "tag", "--models", models, "--heads", "personal", "--cache",
                       cache, "--stale-only", music)
    assert rc == 0, err
    counts = summary(out)
    assert counts["analysed"] == 0 and counts["reheaded"] == 54 + 9, out
    assert decodes == []


def test_mood_head_is_learned_from_the_mood_field(lib, capsys):
    tracks, models, cache, personal = lib
    music = tracks[0].path.parent.parent
    rc, out, err = run(capsys, "learn", "--task", "mood", "--models", models, "--cache", cache,
                       "--min-tracks", 6, music)
    assert rc == 0, err
    assert "accuracy" in out
    meta = {p.key: p.value for p in onnx.load(personal / "personal-mood.onnx").metadata_props}
    (spec,) = json.loads(meta["genreml.heads"])
    assert spec["task"] == "emotion" and sorted(spec["labels"]) == ["calm", "tense"]
    rc, out, err = run(capsys, "analyze", "--json", "--models", models, "--heads", "personal",
                       *[t.path for t in tracks if not t.tagged])
    assert rc == 0, err
    got = [json.loads(line)["emotion"]["label"] for line in out.splitlines()]
    want = [("tense" if t.genre == "Hiss" else "calm") for t in tracks if not t.tagged]
    assert np.mean([g == w for g, w in zip(got, want)]) >= 0.85


def test_labels_from_another_field_split_and_aliased(lib, capsys, tmp_path):
    tracks, models, cache, personal = lib
    music = tracks[0].path.parent.parent
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text("drone music: Drone\n")
    for t in tracks:
        if t.tagged:
            style = {"Drone": "drone music", "Chime": "Chime", "Hiss": "hiss"}[t.genre]
            tag_file(t.path, style=f"{style}; Extra")
    rc, out, err = run(capsys, "learn", "--field", "STYLE", "--aliases", aliases,
                       "--models", models, "--cache", cache, "--min-tracks", 6,
                       "--out", "styles", music)
    assert rc == 0, err
    meta = {p.key: p.value for p in onnx.load(personal / "styles-genre.onnx").metadata_props}
    (spec,) = json.loads(meta["genreml.heads"])
    assert "Drone" in spec["labels"] and "hiss" in spec["labels"]  # the library's spelling
    assert "Extra" not in spec["labels"]  # on every track: nothing to tell apart


def test_learn_says_what_is_wrong(lib, capsys, monkeypatch, tmp_path):
    tracks, models, cache, personal = lib
    one = tracks[0].path.parent  # one artist's tracks
    rc, _, err = run(capsys, "learn", "--models", models, "--cache", cache, one)
    assert rc == 2 and "all by one artist" in err
    rc, _, err = run(capsys, "tag", "--models", models, "--heads", "personal", one)
    assert rc == 2 and "no personal head" in err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "skl2onnx" else real(name, *a))
    rc, _, err = run(capsys, "learn", "--models", models, one)
    assert rc == 2 and "pip install '.[learn]'" in err and "Traceback" not in err


def test_genres_rolled_up_the_genre_tree(tmp_path):
    from tagger.cli import build_parser
    from tagger.cli_learn import _source

    def source(*argv):
        return _source(build_parser().parse_args(["learn", *argv, str(tmp_path)]))

    rolled = source("--tree", "--depth", "2")
    from tagger.learn.examples import Truth, build_examples

    truths = [Truth("/a", ["Melodic Death Metal"], "a"), Truth("/b", ["Rock"], "b")]
    clips = {t.path: type("E", (), {"clips": np.zeros((1, 2), np.float16)})() for t in truths}
    assert build_examples(truths, clips, rolled).labels == [["heavy metal"], ["Rock"]]
    assert source().tree is None
    with pytest.raises(Exception, match="--depth must be 1 or more"):
        source("--tree", "--depth", "0")
