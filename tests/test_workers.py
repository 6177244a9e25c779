"""Several files at once (``--workers``): the same results, in the files' order, as one at a
time; a bad file among them is reported and the others go on. Real files, real models."""

from __future__ import annotations

import json

import pytest

from audiogen import make_audio
from cli_library import make_library, summary, tag
from tagger.cli import main
from tagger.tags import read_tags

pytestmark = pytest.mark.timeout(180)


def _library(tmp_path):
    music, models, cache = make_library(tmp_path)
    for i, freq in enumerate((300.0, 2500.0, 5000.0)):
        make_audio(music / f"extra{i}.ogg", seconds=3.0, sr=44100, freq=freq)
    (music / "broken.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00not audio" * 50)
    return music, models, cache


def test_analyze_with_two_workers_prints_the_same_lines_in_order(tmp_path, capsys):
    music, models, _ = _library(tmp_path)
    outputs = {}
    for workers in ("1", "2", "3"):
        rc = main(["analyze", "--json", "--models", str(models), "--workers", workers,
                   str(music)])
        captured = capsys.readouterr()
        assert rc == 1 and "broken.mp3" in captured.err  # reported, the others analysed
        outputs[workers] = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["path"] for r in outputs["1"]] == sorted(r["path"] for r in outputs["1"])
    assert len(outputs["1"]) == 6
    for workers in ("2", "3"):
        assert [(r["path"], r["genres"], r["emotion"]) for r in outputs[workers]] == \
            [(r["path"], r["genres"], r["emotion"]) for r in outputs["1"]]


def test_tag_with_two_workers_tags_every_file_once(tmp_path, capsys):
    music, models, cache = _library(tmp_path)
    rc, out, err = tag(capsys, music, models, cache, "--workers", "2")
    assert rc == 1 and "broken.mp3" in err
    assert summary(out) == {"tagged": 6, "unchanged": 0, "analysed": 6, "cached": 0,
                            "skipped": 0, "failed": 1}
    assert read_tags(music / "low.flac").genres == ["Low"]
    rc, out, _ = tag(capsys, music, models, cache, "--workers", "2")
    assert summary(out)["unchanged"] == 6 and summary(out)["cached"] == 6
