"""``--ray``: the same analysis on a real local Ray instance (2 CPUs, started here).

Real files in several formats encoded by real codecs, a small real ONNX model, Ray Data's
tasks and actor pool, the real cache. Through Ray a folder gives what a local run gives; a
corrupt file is reported and the others come out; a second run sends nothing to the cluster.
"""

from __future__ import annotations

import json
import shutil

import pytest
import ray

import onnx_models as om
from audiogen import make_audio
from cli_library import run
from tagger.tags import read_tags

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster():
    import os

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def library(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    make_audio(music / "low.flac", seconds=6.0, freq=200.0)
    make_audio(music / "high.mp3", seconds=5.0, sr=44100, freq=6000.0)
    make_audio(music / "mid.m4a", seconds=5.0, sr=44100, freq=1500.0)
    make_audio(music / "noise.ogg", seconds=4.0, kind="noise")
    make_audio(music / "chirp.wav", seconds=7.0, kind="chirp")
    models = tmp_path / "models"
    om.band_model(models / "band.onnx")
    return music, models


def tagged_as_locally(capsys, models, music, twin, cache) -> None:
    """``genreml tag`` run here on ``twin`` (a copy of ``music`` as it was) writes the tags
    the Ray run wrote into ``music``."""
    rc, _, err = run(capsys, "tag", "--models", models, "--cache", cache, twin)
    assert rc == 0, err
    for path in sorted(music.iterdir()):
        assert read_tags(path) == read_tags(twin / path.name), path.name
        assert read_tags(path).genres


def by_path(out: str) -> dict[str, dict]:
    return {row["path"]: row for row in map(json.loads, out.splitlines())}


def test_ray_gives_the_local_results_and_reports_a_corrupt_file(cluster, library, capsys,
                                                                   tmp_path):
    music, models = library
    rc, out, err = run(capsys, "analyze", "--json", "--models", models, music)
    assert rc == 0, err
    local = by_path(out)
    (music / "broken.mp3").write_bytes(b"\xff\xfb" + b"\0" * 3000)
    rc, out, err = run(capsys, "analyze", "--json", "--ray", "--models", models,
                       "--cache", tmp_path / "cache.db", music)
    assert rc == 1
    assert "broken.mp3: " in err and "Traceback" not in err
    assert "5 of 6 files sent to Ray" not in err and "6 of 6 files sent to Ray" in err
    remote = by_path(out)
    assert set(remote) == set(local)
    for path, want in local.items():
        got = remote[path]
        assert got["genres"] and [g["label"] for g in got["genres"]] == \
            [g["label"] for g in want["genres"]]
        assert got["emotion"]["label"] == want["emotion"]["label"]
        assert got["clips"] == want["clips"]
        for label, p in want["genre_probs"].items():
            assert got["genre_probs"][label] == pytest.approx(p, abs=1e-3), (path, label)


def test_tag_through_ray_then_nothing_is_sent_again(cluster, library, capsys, tmp_path):
    music, models = library
    twin = tmp_path / "twin"
    shutil.copytree(music, twin)
    cache = tmp_path / "cache.db"
    rc, out, err = run(capsys, "tag", "--ray", "--models", models, "--cache", cache, music)
    assert rc == 0, err
    assert "5 of 5 files sent to Ray" in err
    tagged_as_locally(capsys, models, music, twin, tmp_path / "local.db")
    rc, out, err = run(capsys, "tag", "--ray", "--models", models, "--cache", cache, music)
    assert rc == 0, err
    assert "0 of 5 files sent to Ray" in err
    assert "unchanged 5" in out


def test_workers_write_the_tags_when_asked(cluster, library, capsys, tmp_path, monkeypatch):
    music, models = library
    twin = tmp_path / "twin"
    shutil.copytree(music, twin)
    cache = tmp_path / "cache.db"
    # genreml's earlier value in one file (from a model on another backbone, so the file is
    # analysed again, on the cluster): the worker's plan takes it out, as a local one does
    const = tmp_path / "const"
    om.constant_model(const / "const.onnx", {"Bogus": 0.9}, {"calm": 0.6, "tense": 0.4},
                      clip_seconds=2.0)
    for folder, db in ((music, cache), (twin, tmp_path / "local.db")):
        assert run(capsys, "tag", "--models", const, "--cache", db, folder / "low.flac")[0] == 0
    from tagger.tagging import WriteSettings

    def not_here(*args, **kwargs):
        raise AssertionError("the driver wrote tags: the workers were to")

    with monkeypatch.context() as patch:  # Ray's workers are other processes: not patched
        patch.setattr(WriteSettings, "write", not_here)
        rc, out, err = run(capsys, "tag", "--ray", "--ray-write", "--models", models,
                           "--cache", cache, music)
    assert rc == 0, err
    assert "5 of 5 files sent to Ray" in err
    tagged_as_locally(capsys, models, music, twin, tmp_path / "local.db")
    assert "Bogus" not in read_tags(music / "low.flac").genres
    # the cache was filled from the workers' results: nothing to do, nothing sent
    rc, out, err = run(capsys, "tag", "--ray", "--ray-write", "--models", models, "--cache",
                       cache, music)
    assert rc == 0 and "0 of 5 files sent to Ray" in err and "unchanged 5" in out


def test_results_to_parquet(library, capsys, tmp_path):
    import pyarrow.parquet as pq

    music, models = library
    out = tmp_path / "results.parquet"
    rc, stdout, err = run(capsys, "analyze", "--out", out, "--models", models, music)
    assert rc == 0, err
    assert stdout == ""
    rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == 5
    low = rows[str(music / "low.flac")]
    assert low["genres"] == ["Low"] and low["mood"] == "calm" and low["clips"] == 6
    assert json.loads(low["genre_probs"])["Low"] > 0.9


def test_without_ray_installed_it_says_how(library, capsys, monkeypatch):
    import importlib.util

    music, models = library
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    rc, _, err = run(capsys, "tag", "--ray", "--models", models, music)
    assert rc == 2 and "pip install '.[ray]'" in err
