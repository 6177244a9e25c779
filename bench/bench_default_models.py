"""Reproduce the bundled models' test figures (MODEL_CARD.md) from ../shared/data.

    python bench/bench_default_models.py [--data ../shared/data/4q] [--gtzan ...] [--seed 0]

Re-draws the split of ``make models`` with the card's seed (deterministic, no embeddings
needed), runs the bundled models (``tagger/models/``) through the tagger on the test
tracks and prints the figures next to those recorded in ``tagger/models/metrics.json``.
Needs the ``train`` extra (scikit-learn) but no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    import numpy as np

    from tagger.model import default_models_dir
    from trainer.bundle.corpus import corpus_index
    from trainer.bundle.report import model_probabilities
    from trainer.evaluate import multi_label_metrics
    from trainer.vocabulary import display_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "4q")
    ap.add_argument("--gtzan", type=Path, default=SHARED / "gtzan-classical")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    recorded = json.loads((default_models_dir() / "metrics.json").read_text())["test"]
    index = corpus_index(args.data, args.gtzan, seed=args.seed)
    test = index.parts["test"]
    genre_p, mood_p = model_probabilities(default_models_dir(), test.paths)
    shipped = recorded["shipped"]
    columns = [index.genres.index(g) for g in shipped]
    q4 = test.source == "4q"
    # the bundled file holds only the shipped labels, in the same order
    m = multi_label_metrics(test.genres[q4][:, columns], genre_p[q4], shipped,
                            recorded["genre_shipped"]["threshold"])
    summary = {
        "labels": [display_name(g) for g in shipped],
        "mood_accuracy": [float(np.mean(mood_p[q4].argmax(1) == test.mood[q4])),
                          recorded["mood"]["accuracy"]],
        "genre_micro_f1": [m["micro_f1"], recorded["genre_shipped"]["micro_f1"]],
        "genre_mean_roc_auc": [m["macro_roc_auc"], recorded["genre_shipped"]["macro_roc_auc"]],
        "4q_tracks_with_no_genre": [
            float((genre_p[q4] < recorded["genre_shipped"]["threshold"]).all(axis=1).mean()),
            recorded.get("no_genre_share")],
    }
    print("figure: [now, recorded in metrics.json]")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
