"""A small music library, a tiny real model and `genreml tag` run in-process, for CLI tests."""

from __future__ import annotations

from pathlib import Path

import onnx_models as om
from audiogen import make_audio
from tagger.cli import main


def make_library(tmp_path: Path, m4a: bool = True) -> tuple[Path, Path, Path]:
    """``(music, models, cache)``: low.flac, high.mp3 (and mid.m4a), the band model, a cache
    path that does not exist yet."""
    music = tmp_path / "music"
    music.mkdir()
    make_audio(music / "low.flac", seconds=4.0, freq=200.0)
    make_audio(music / "high.mp3", seconds=4.0, sr=44100, freq=6000.0)
    if m4a:
        make_audio(music / "mid.m4a", seconds=4.0, sr=44100, freq=1500.0)
    models = tmp_path / "models"
    models.mkdir()
    om.band_model(models / "band.onnx")
    return music, models, tmp_path / "cache.db"


def tag(capsys, music, models, cache, *extra, before=()) -> tuple[int, str, str]:
    """``genreml [BEFORE] tag --models M --cache C [EXTRA] MUSIC``: (exit code, out, err)."""
    rc = main([*before, "tag", "--models", str(models), "--cache", str(cache),
               *map(str, extra), str(music)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def run(capsys, *argv) -> tuple[int, str, str]:
    """``genreml ARGV...`` in-process: (exit code, out, err)."""
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def summary(out: str) -> dict[str, int]:
    """The last line of `genreml tag` (``tagged 3, unchanged 0, ...``) as counts."""
    last = out.strip().splitlines()[-1].replace("would tag", "tagged")
    return {k: int(v) for k, v in (part.strip().rsplit(" ", 1) for part in last.split(","))}
