"""Rebuild the bundled default models from scratch (``make models``).

1. Convert the musicnn MSD and MTT checkpoints to ONNX (parity-checked against TensorFlow)
   and stack them into one backbone whose embeddings are both models' side by side.
2. Train an emotion head (4Q quadrants as happy / tense / sad / calm) and a genre head (the
   AllMusic genres with at least ``--min-count`` tracks) on the artist-disjoint 4Q split.
3. Join both heads over the one backbone into ``tagger/models/genreml-4q.onnx`` and write
   ``tagger/models/MODEL_CARD.md`` from the two runs' metrics.

Needs the ``train`` extra and ``pip install --no-deps musicnn==0.1.0``. Takes about half an
hour on 2 cores, most of it computing embeddings (cached under ``~/.cache/genreml``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "4q"
NAME, VERSION = "genreml-4q", "1.0.0"
EMBEDDING = ("penultimate",)


def build(data: Path, work: Path, out_dir: Path, seed: int, min_count: int,
          embedding: tuple[str, ...], backbone: Path | None = None) -> Path:
    from trainer.export import combine
    from trainer.musicnn import convert_backbone, stack_backbones
    from trainer.train import TrainConfig, train

    stacked = backbone
    if stacked is None:
        backbones = work / "backbones"
        backbones.mkdir(parents=True, exist_ok=True)
        parts = [convert_backbone(m, backbones / f"{m}.onnx")
                 for m in ("MSD_musicnn", "MTT_musicnn")]
        stacked = stack_backbones(parts, backbones / "musicnn_msd_mtt.onnx")
    runs = {}
    for task in ("emotion", "genre"):
        run = work / task
        if run.exists():
            shutil.rmtree(run)
        config = TrainConfig(
            dataset="4q", data_path=str(data), task=task, backbone="musicnn",
            backbone_onnx=str(stacked), embedding=embedding, out=str(run),
            name=f"{NAME}-{task}", version=VERSION, seed=seed,
            min_count=min_count if task == "genre" else 1, tune_threshold=task == "genre",
            # unweighted genre loss keeps probabilities calibrated for one shared threshold
            # (validation micro-F1 0.50 vs 0.47 weighted); the four moods are balanced anyway
            class_weights=task == "emotion")
        runs[task] = train(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = combine(next(runs["genre"].glob("*.onnx")), next(runs["emotion"].glob("*.onnx")),
                    out_dir / f"{NAME}.onnx", name=NAME, version=VERSION)
    write_card(runs, out_dir / "MODEL_CARD.md", seed, min_count)
    return model


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _confusion_table(confusion: dict) -> str:
    labels = confusion["labels"]
    rows = [f"| truth \\ predicted | {' | '.join(labels)} |",
            "|---" * (len(labels) + 1) + "|"]
    rows += [f"| {label} | {' | '.join(map(str, row))} |"
             for label, row in zip(labels, confusion["matrix"])]
    return "\n".join(rows)


def write_card(runs: dict[str, Path], out: Path, seed: int, min_count: int) -> None:
    """The bundled models' card from both runs' ``metrics.json`` and ``splits.json``."""
    m = {t: json.loads((r / "metrics.json").read_text()) for t, r in runs.items()}
    template = (ROOT / "scripts" / "MODEL_CARD.template.md").read_text()
    emo, gen = m["emotion"]["test"], m["genre"]["test"]
    val = m["genre"]["validation"]
    per_label = "\n".join(
        f"| {label} | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} | {v['support']} |"
        for label, v in gen["per_label"].items())
    recalls = ", ".join(f"{k} {_pct(v)}" for k, v in emo["per_class_recall"].items())
    fill = {
        "seed": seed, "min_count": min_count,
        "emotion_acc": _pct(emo["accuracy"]), "emotion_recall": recalls,
        "emotion_tracks": emo["tracks"],
        "emotion_val_acc": _pct(m["emotion"]["validation"]["accuracy"]),
        "genre_auc": f"{gen['macro_roc_auc']:.3f}", "genre_micro": f"{gen['micro_f1']:.3f}",
        "genre_macro": f"{gen['macro_f1']:.3f}", "genre_tracks": gen["tracks"],
        "threshold": f"{m['genre']['threshold']:g}",
        "threshold_source": m["genre"]["threshold_source"],
        "genre_val_micro_at_default": f"{val.get('micro_f1_at_default', val['micro_f1']):.3f}",
        "genre_val_micro": f"{val['micro_f1']:.3f}",
        "per_label": per_label,
        "labels": ", ".join(gen["per_label"]),
        "confusion": _confusion_table(emo["confusion_matrix"]),
    }
    out.write_text(template.format(**fill))
    shutil.copy(runs["emotion"] / "confusion.png", out.parent / "emotion_confusion.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the 4Q folder")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "default",
                    help="where backbones and runs go")
    ap.add_argument("--out", type=Path, default=ROOT / "tagger" / "models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-count", type=int, default=20)
    ap.add_argument("--embedding", default=",".join(EMBEDDING))
    ap.add_argument("--backbone", type=Path, default=None,
                    help="a stacked backbone already converted (skips the conversion; the "
                    "conversion is not bit-for-bit repeatable, so reusing one file keeps the "
                    "embedding cache valid)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = build(args.data, args.work, args.out, args.seed, args.min_count,
                 tuple(args.embedding.split(",")), args.backbone)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
