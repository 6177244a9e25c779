"""Reproduce the bundled models' test figures (MODEL_CARD.md) from ../shared/data/4q.

    python bench/bench_default_models.py [--data ../shared/data/4q] [--seed 0]

Re-draws the artist-disjoint split with the card's seed (deterministic), runs the bundled
``tagger/models/genreml-4q.onnx`` through the tagger on each task's test tracks and prints the
track-level metrics. Needs the ``train`` extra (scikit-learn) but no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from tagger.model import load_models
    from trainer.datasets import load_dataset
    from trainer.evaluate import evaluate_models
    from trainer.splits import split_by_group

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "4q")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-count", type=int, default=20)
    args = ap.parse_args()
    models = load_models(device="cpu")
    summary = {}
    for task in ("emotion", "genre"):
        data = load_dataset("4q", args.data, task, args.min_count if task == "genre" else 1)
        test = split_by_group(data, seed=args.seed).test
        m = evaluate_models(models, task, [data.examples[i].path for i in test],
                            data.targets(test), data.labels, data.multi_label, progress=True)
        keys = ("tracks", "accuracy", "balanced_accuracy", "per_class_recall") if task == \
            "emotion" else ("tracks", "threshold", "micro_f1", "macro_f1", "macro_roc_auc")
        summary[task] = {k: m[k] for k in keys}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
