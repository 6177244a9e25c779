"""The trainer end to end on a tiny generated data set: train, export, evaluate, tag.

Three synthetic "genres" with distinct timbres (low tones, high tones, noise), 10 three-second
files each in GTZAN's folder layout, 1-s clips at 16 kHz with 32 mel bands: a tiny CNN learns
them in a few seconds. The musicnn path runs on a stand-in backbone built with onnx.helper (input
``mel``, outputs ``penultimate``/``mean_pool``/``taggram``), as the real converted backbone has.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from audiogen import write_audio
from tagger.features import FeatureSettings
from tagger.model import load_models
from tagger.predict import Analyzer
from tagger.cli import build_parser
from trainer.export import ExportError, check_parity, run_onnx
from trainer.features_cache import ClipSpec, FeatureCache, OnnxBackbone
from trainer.splits import read_splits

SR = 16000
FEATURES = FeatureSettings(n_mels=32, n_frames=62)  # 1-s clips at 16 kHz
CLASSES = ("high", "low", "noise")
TRAIN_ARGS = ["--clip-seconds", "1", "--n-mels", "32", "--filters", "8", "--blocks", "3",
              "--epochs", "20", "--batch-size", "8", "--splits", "0.6,0.2,0.2", "--seed", "0",
              "-q"]


def _signal(kind: str, seed: int, seconds: float = 3.0) -> np.ndarray:
    """A tone in a low or high band (random pitch, a harmonic, a little noise), or noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "noise":
        y = 0.3 * rng.standard_normal(len(t))
    else:
        f = rng.uniform(*((150, 300) if kind == "low" else (2000, 3500)))
        y = (0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(4 * np.pi * f * t)
             + 0.01 * rng.standard_normal(len(t)))
    return y.astype(np.float32)[:, None]


def _cli(*argv: str) -> int:
    """The trainer's commands as `genreml` runs them (registered through the entry point)."""
    args = build_parser().parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_gtzan")
    for c, kind in enumerate(CLASSES):
        (root / kind).mkdir()
        for i in range(10):
            write_audio(root / kind / f"{kind}.{i:05d}.wav", _signal(kind, 100 * c + i), SR)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def cnn_run(tiny_set, cache_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "cnn"
    code = _cli("train", "--dataset", "gtzan", tiny_set, "--task", "genre", "--out", run_dir,
                "--cache-dir", cache_dir, "--tune-threshold", *TRAIN_ARGS)
    assert code == 0
    return run_dir


def test_cnn_run_is_complete_and_well_above_chance(cnn_run):
    names = {p.name for p in cnn_run.iterdir()}
    assert {"config.json", "history.json", "metrics.json", "splits.json", "confusion.png",
            "MODEL_CARD.md", "gtzan-genre-cnn.onnx", "gtzan-genre-cnn-backbone.onnx"} <= names
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["tracks"] == 6
    assert test["accuracy"] >= 0.8  # chance is 1/3
    assert test["micro_f1"] >= 0.7
    assert metrics["export_parity_max_abs_diff"] <= 1e-4
    assert 0 < metrics["threshold"] < 1
    history = json.loads((cnn_run / "history.json").read_text())
    assert len(history["val_loss"]) == metrics["epochs_run"]
    assert (cnn_run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    record = read_splits(cnn_run / "splits.json")
    sides = [set(record[name]) for name in ("train", "validation", "test")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sum(map(len, sides)) == 30


def test_exported_run_tags_new_files_without_tensorflow(cnn_run, tmp_path):
    models = load_models(cnn_run, device="cpu")
    ((head, _),) = models.specs
    assert head.task == "genre" and set(head.labels) == set(CLASSES)
    analyzer = Analyzer(models)
    files = []
    for kind in CLASSES:
        path = write_audio(tmp_path / f"new_{kind}.flac", _signal(kind, 999, 4.0), SR)
        assert analyzer.analyze(path).genres[0][0] == kind
        files.append(path)
    # `genreml analyze --models RUN_DIR` in a process where TensorFlow cannot be imported
    code = ("import sys; sys.modules['tensorflow'] = None; from tagger.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "analyze", "--json", "--models", cnn_run,
                           *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    top = [json.loads(line)["genres"][0]["label"] for line in proc.stdout.splitlines()]
    assert top == list(CLASSES)


def test_evaluate_command_matches_the_run(cnn_run, capsys):
    capsys.readouterr()
    assert _cli("evaluate", cnn_run, "--json", "-q") == 0
    again = json.loads(capsys.readouterr().out)
    recorded = json.loads((cnn_run / "metrics.json").read_text())["test"]
    assert again["accuracy"] == recorded["accuracy"]
    assert again["per_label"] == recorded["per_label"]


def test_export_parity_is_enforced(cnn_run):
    model = cnn_run / "gtzan-genre-cnn-backbone.onnx"
    mel = np.random.default_rng(0).uniform(0, 3, (4, FEATURES.n_frames, FEATURES.n_mels))
    out = run_onnx(model, {"mel": mel})
    assert check_parity(model, {"mel": mel}, out) == 0.0
    with pytest.raises(ExportError):
        check_parity(model, {"mel": mel}, {"embedding": out["embedding"] + 2e-4})


def test_cli_usage_errors(tiny_set, cnn_run, capsys):
    assert _cli("train", "--dataset", "nope", tiny_set, "--task", "genre") == 2
    assert "--dataset KIND" in capsys.readouterr().err
    assert _cli("train", "--dataset", "gtzan", tiny_set, "--task", "genre",
                "--out", cnn_run) == 2  # never overwrites a run
    assert "not empty" in capsys.readouterr().err
    assert _cli("evaluate", tiny_set) == 2


def test_train_without_tensorflow_says_which_extra(tmp_path):
    code = ("import sys; sys.modules['tensorflow'] = None; from tagger.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--dataset", "gtzan", tmp_path,
                           "--task", "genre"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "genreml train needs the train extra: pip install '.[train]' in a genreml clone" in proc.stderr


# --------------------------------------------------------------------------- musicnn path


def _stand_in_backbone(path: Path) -> Path:
    """A backbone with musicnn's interface: ``mel`` in; ``penultimate`` (ReLU of a random
    projection of the band means), ``mean_pool`` and ``taggram`` out; genreml feature metadata."""
    rng = np.random.default_rng(0)
    n = FEATURES.n_mels
    inp = helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", FEATURES.n_frames, n])
    nodes = [
        helper.make_node("ReduceMean", ["mel"], ["mean_pool"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["mean_pool", "w1"], ["proj"]),
        helper.make_node("Relu", ["proj"], ["penultimate"]),
        helper.make_node("MatMul", ["penultimate", "w2"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["taggram"]),
    ]
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (n, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.5, (16, 5)).astype(np.float32), "w2")]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])
               for name, width in (("taggram", 5), ("penultimate", 16), ("mean_pool", n))]
    graph = helper.make_graph(nodes, "stand_in", [inp], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"genreml.backbone": "stand-in", "genreml.sample_rate": str(SR),
                       "genreml.clip_seconds": "1.0",
                       "genreml.features": FEATURES.to_json()}.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(model, path)
    return path


def test_backbone_outputs_are_cached_together(tmp_path):
    stand_in = _stand_in_backbone(tmp_path / "stand_in.onnx")
    audio = write_audio(tmp_path / "a.wav", _signal("low", 1), SR)
    spec = ClipSpec(SR, 1.0, 1.0, FEATURES)
    cache = FeatureCache(tmp_path / "cache")
    pen = OnnxBackbone(stand_in, ["penultimate"])
    both = OnnxBackbone(stand_in, ["mean_pool", "penultimate"])
    x = cache.embeddings(audio, spec, pen)
    y = cache.embeddings(audio, spec, both)  # served from the same entry
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1
    assert x.shape == (3, 16) and y.shape == (3, FEATURES.n_mels + 16)
    np.testing.assert_array_equal(y[:, FEATURES.n_mels:], x)
    np.testing.assert_allclose(x, pen.embed(cache.features(audio, spec)), rtol=1e-6)


def test_musicnn_heads_share_one_backbone(tiny_set, cache_dir, cnn_run, tmp_path):
    backbone = _stand_in_backbone(tmp_path / "stand_in.onnx")
    runs = {}
    for task, extra in (("genre", ["--tune-threshold"]), ("emotion", ["--no-test"])):
        runs[task] = tmp_path / task
        code = _cli("train", "--dataset", "gtzan", tiny_set, "--task", task, "--out", runs[task],
                    "--backbone", "musicnn", "--backbone-onnx", backbone,
                    "--embedding", "penultimate,mean_pool", "--hidden", "16",
                    "--cache-dir", cache_dir, "--lr", "0.01", *TRAIN_ARGS, *extra)
        assert code == 0
        assert (runs[task] / "parts" / f"{task}_head.onnx").is_file()  # intermediates aside
    metrics = {t: json.loads((runs[t] / "metrics.json").read_text()) for t in runs}
    assert metrics["genre"]["test"]["accuracy"] >= 0.8
    assert metrics["emotion"]["test"] is None  # --no-test leaves the test split untouched
    assert not (runs["emotion"] / "confusion.png").exists()
    assert metrics["emotion"]["validation"]["accuracy"] >= 0.8
    # both runs wrote the same backbone file: one sha256, so their heads share one copy of it
    genre_b, emotion_b = (runs[t] / "stand-in.onnx" for t in ("genre", "emotion"))
    assert genre_b.read_bytes() == emotion_b.read_bytes()
    folder = tmp_path / "together"
    folder.mkdir()
    shutil.copy(genre_b, folder)
    for t in runs:
        (head,) = [p for p in runs[t].glob("*.onnx") if p.name != "stand-in.onnx"]
        shutil.copy(head, folder)
    models = load_models(folder, device="cpu")
    assert sorted(h.task for h, _ in models.specs) == ["emotion", "genre"]
    mel = np.random.default_rng(1).uniform(0, 3, (5, FEATURES.n_frames, FEATURES.n_mels))
    emb = models.backbone.embed(mel)
    probs = models.apply_heads(emb)
    for task in runs:  # each head file is the head Keras trained
        bare = run_onnx(runs[task] / "parts" / f"{task}_head.onnx", {"embedding": emb})[task]
        np.testing.assert_allclose(probs[task], bare, atol=1e-5)
    result = Analyzer(models).analyze(write_audio(tmp_path / "x.wav", _signal("high", 7), SR))
    assert result.genres[0][0] == "high" and result.emotion[0] == "high"