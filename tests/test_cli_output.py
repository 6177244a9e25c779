"""What the CLI prints and what its options reach: -q/-v, ``tag --print``, the progress bar on
a terminal only, the ``--threshold`` help, ``status``'s cache summary, ``--no-write`` counts,
and the new write and watch options. Real files, models, caches; a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest

import onnx_models as om
from cli_library import make_library, tag, summary
from tagger.cli import build_parser, main
from tagger.tags import read_tags, write_tags

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def lib(tmp_path):
    return make_library(tmp_path)




def test_no_write_counts_each_file_once(lib, capsys):
    music, models, cache = lib
    rc, out, _ = tag(capsys, music, models, cache, "--no-write")
    assert rc == 0
    assert summary(out) == {"analysed": 3, "cached": 0, "skipped": 0, "failed": 0}
    rc, out, _ = tag(capsys, music, models, cache, "--no-write")
    assert summary(out) == {"analysed": 0, "cached": 3, "skipped": 0, "failed": 0}


def test_print_shows_each_files_result_and_what_changed(lib, capsys):
    music, models, cache = lib
    write_tags(music / "low.flac", ["Ambient"], None, "force")
    rc, out, _ = tag(capsys, music, models, cache, "--print")
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 4  # one per file, then the summary
    low = next(line for line in lines if "low.flac" in line)
    assert low.endswith("low.flac: Ambient | calm [tagged, analysed] mood: None -> 'calm'")
    high = next(line for line in lines if "high.mp3" in line)
    assert high.endswith("high.mp3: High | tense [tagged, analysed] "
                         "genre: [] -> ['High']; mood: None -> 'tense'")
    rc, out, _ = tag(capsys, music, models, cache, "-v")  # -v shows them too
    assert any(line.endswith("low.flac: Ambient | calm [unchanged, cache]")
               for line in out.splitlines())


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_keeps_only_errors(lib, capsys, where):
    music, models, cache = lib
    (music / "broken.flac").write_bytes(b"fLaC but not really" * 30)
    before, extra = (["-q"], ()) if where == "before" else ([], ("-q",))
    rc, out, err = tag(capsys, music, models, cache, "--print", *extra, before=before)
    assert rc == 1
    assert out == ""
    assert [line for line in err.splitlines() if line] == [
        line for line in err.splitlines() if "broken.flac" in line]
    assert "broken.flac: not decodable audio" in err
    assert read_tags(music / "low.flac").genres == ["Low"]  # the work was done


def _run_on_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal and stdout on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24x100
    proc = subprocess.Popen([sys.executable, "-m", "tagger.cli", *argv],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 240)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode()
    rc = proc.wait(60)
    os.close(master)
    return rc, out, b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only_and_never_in_the_results(lib, tmp_path):
    music, models, cache = lib
    rc, out, terminal = _run_on_a_terminal(
        ["analyze", "--json", "--models", str(models), str(music)])
    assert rc == 0
    assert "analyze" in terminal and "file" in terminal  # the bar was drawn
    rows = [json.loads(line) for line in out.splitlines()]  # stdout: pure JSON lines
    assert len(rows) == 3
    assert "\r" not in out and "analyze" not in out
    proc = subprocess.run([sys.executable, "-m", "tagger.cli", "analyze", "--models",
                           str(models), str(music)], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0 and proc.stderr == ""  # not a terminal: no bar
    rc, out, terminal = _run_on_a_terminal(
        ["-q", "analyze", "--json", "--models", str(models), str(music)])
    assert rc == 0 and terminal.strip() == "" and len(out.splitlines()) == 3


def test_threshold_help_states_the_bundled_models_value(capsys):
    import onnxruntime as ort

    from tagger.model import default_models_dir

    session = ort.InferenceSession(str(default_models_dir() / "genreml-4q-genre.onnx"),
                                   providers=["CPUExecutionProvider"])
    heads = json.loads(session.get_modelmeta().custom_metadata_map["genreml.heads"])
    bundled = next(h["threshold"] for h in heads if h["task"] == "genre")
    from tagger.cli_options import BUNDLED_THRESHOLD

    assert BUNDLED_THRESHOLD == bundled
    with pytest.raises(SystemExit):
        main(["tag", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{bundled} for the bundled model" in help_text


def test_help_does_not_import_onnxruntime():
    code = ("import sys; from tagger.cli import build_parser; build_parser(); "
            "print('onnxruntime' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.strip() == "False"


def test_status_reports_what_the_cache_holds(lib, capsys):
    music, models, cache = lib
    tag(capsys, music, models, cache)
    rc = main(["status", "--cache", str(cache)])
    out = capsys.readouterr().out
    assert rc == 0
    line = next(line for line in out.splitlines() if line.startswith("tracks:"))
    assert line.startswith("tracks: 3 (") and "stale 0" in line and "failed 0" in line


def test_new_options_reach_the_tagger_and_the_watcher():
    parser = build_parser()
    args = parser.parse_args(["tag", "--v23-sep", " / ", "--safe-only", "x"])
    from tagger.cli import _tagger_options

    assert _tagger_options(args) == {"v23_sep": " / ", "safe_only": True}
    assert _tagger_options(parser.parse_args(["tag", "x"])) == {}
    args = parser.parse_args(["watch", "--network-settle", "90", "--follow-links", "d"])
    assert (args.network_settle, args.follow_links) == (90.0, True)


def test_v23_sep_is_written(lib, capsys, tmp_path):
    from mutagen.id3 import ID3

    music, models, cache = lib
    odd = tmp_path / "odd"
    odd.mkdir()
    om.constant_model(odd / "odd.onnx", genre_probs={"Pop/Rock": 0.9, "R&B": 0.8},
                      emotion_probs={"calm": 0.8, "sad": 0.2})
    mp3 = music / "high.mp3"
    from mutagen.id3 import TIT2

    tags = ID3()
    tags.add(TIT2(encoding=3, text=["high"]))
    tags.save(mp3, v2_version=3)  # a v2.3 file stays v2.3
    rc = main(["tag", "--models", str(odd), "--cache", str(cache), "--v23-sep", " | ",
               str(mp3)])
    capsys.readouterr()
    assert rc == 0
    frames = ID3(mp3)
    assert frames.version[:2] == (2, 3)
    assert frames.getall("TCON")[0].text == ["Pop/Rock | R&B"]

