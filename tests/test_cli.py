"""``genreml analyze`` as a user runs it: a real process, real files, real models."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx_models as om
from audiogen import make_audio


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tagger.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def _library(tmp_path):
    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    make_audio(music / "album" / "01 low.flac", seconds=4.0, freq=200.0)
    make_audio(music / "album" / "02 high.mp3", seconds=4.0, sr=44100, freq=6000.0)
    make_audio(music / "03 stereo.m4a", seconds=3.0, sr=44100, channels=2, freq=200.0)
    (music / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    models = tmp_path / "models"
    models.mkdir()
    om.band_model(models / "band.onnx")
    return music, models


def test_analyze_json_lines(tmp_path):
    music, models = _library(tmp_path)
    proc = run("analyze", "--json", "--models", models, music)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {"01 low.flac", "02 high.mp3", "03 stereo.m4a"}
    low = by_name["01 low.flac"]
    assert {"path", "genres", "genre_probs", "emotion", "emotion_probs", "clips", "duration",
            "models"} <= set(low)
    assert low["genres"][0]["label"] == "Low" and low["emotion"]["label"] == "calm"
    assert by_name["02 high.mp3"]["genres"][0]["label"] == "High"
    assert low["clips"] == 4 and abs(low["duration"] - 4.0) < 0.01
    assert set(low["genre_probs"]) == set(om.GENRES)
    assert low["models"]["genre"].startswith("test@1:")
    assert proc.stderr == ""  # no progress bar: stderr is not a terminal


def test_analyze_human_output_and_threshold(tmp_path):
    music, models = _library(tmp_path)
    proc = run("analyze", "--models", models, "--threshold", "0.99", music / "album")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("01 low.flac: Low 1.00 | calm 1.00")  # p(Low) = 0.995
    assert lines[1].endswith("02 high.mp3: - | tense 1.00")  # p(High) = 0.78 < 0.99


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path):
    music, models = _library(tmp_path)
    (music / "album" / "broken.mp3").write_bytes(b"not an mp3 at all" * 50)
    (music / "album" / "empty.flac").write_bytes(b"")
    make_audio(music / "album" / "silence.wav", seconds=4.0, kind="silence")
    proc = run("analyze", "--json", "--models", models, music)
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 3
    errors = [l for l in proc.stderr.splitlines() if l.startswith("genreml: ")]
    assert len(errors) == 3
    assert any("broken.mp3: not decodable audio" in l for l in errors)
    assert any("empty.flac: empty file" in l for l in errors)
    assert any(l.endswith("silence.wav: skipped: silent") for l in errors)  # not a failure


def test_usage_errors_exit_2(tmp_path):
    music, models = _library(tmp_path)
    empty = tmp_path / "no-models"
    empty.mkdir()
    proc = run("analyze", "--models", empty, music)
    assert proc.returncode == 2 and "no .onnx models" in proc.stderr
    proc = run("analyze", "--models", models, tmp_path / "nothing-here")
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run("analyze", "--models", models, "--threshold", "3", music)
    assert proc.returncode == 2
    import onnxruntime as ort

    proc = run("analyze", "--models", models, "--device", "cuda", music)
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert proc.returncode == (0 if has_cuda else 2)
