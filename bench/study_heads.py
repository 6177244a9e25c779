"""Issue 14 reproduction: logistic regression on pooled musicnn embeddings, grouped CV on 4Q.

Reproduces the figures issue 14 quotes ("measured by grouped cross-validation by artist on
the 719 shared clips") before anything is built on them:

* mood (4 quadrants): accuracy; genre (one-vs-rest over labels with >= ``--min-count``
  tracks): mean ROC-AUC, micro-F1 at threshold 0.2, per-label ROC-AUC;
* for MSD alone, MTT alone and MSD+MTT concatenated (200-unit penultimate layers);
* heads: a standardised logistic regression trained on track-mean embeddings, with C chosen
  per outer fold by an inner grouped CV over a small grid (the per-C out-of-fold figures are
  reported too), evaluated two ways: on the track mean, and per clip with the clip
  probabilities averaged (the tagger's runtime);
* 5 outer folds, StratifiedGroupKFold by artist (stratified by quadrant), fixed seed.

Embeddings come from the repo's own code path: :class:`tagger.audio.ClipStream` decoding,
:func:`tagger.features.log_mel`, the converted ONNX backbones (``python -m trainer.musicnn``)
stacked with :func:`trainer.musicnn.stack_backbones`, cached by
:class:`trainer.features_cache.FeatureCache` (under ``/tmp/study14`` by default, never in the
repository). Clips are 3 s without overlap, as the tagger reads a file by default.

Usage (1 thread, low priority; the machine is shared)::

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 taskset -c 1 python bench/study_heads.py \\
        --backbones /tmp/study14/backbones --cache /tmp/study14/cache \\
        --json /tmp/study14/results.json

``--backbones`` holds ``MSD_musicnn.onnx`` and ``MTT_musicnn.onnx`` made by
``python -m trainer.musicnn --model M --out DIR/M.onnx``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "4q"
GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)
THRESHOLD = 0.2
QUOTED = {  # issue 14, "What is known"
    "MSD": {"mood_acc": "0.740", "genre_auc": "0.866"},
    "MTT": {"mood_acc": "0.716", "genre_auc": "0.826"},
    "MSD+MTT": {"mood_acc": "0.740-0.752", "genre_auc": "0.864"},
}

log = logging.getLogger("study_heads")


# ----------------------------------------------------------------------------- embeddings

def load_embeddings(data: Path, backbones: Path, cache: Path, threads: int):
    """Per-track lists of clip embeddings (MSD | MTT penultimate, 400 wide), plus the dataset
    rows: (clips, mood index, genre multi-hot, genre labels, groups, paths, seconds)."""
    from tagger.features import MUSICNN_FEATURES
    from trainer.datasets import QUADRANT_WORDS, read_4q
    from trainer.features_cache import ClipSpec, FeatureCache, OnnxBackbone
    from trainer.musicnn import CLIP_SECONDS, SAMPLE_RATE, stack_backbones

    stacked = backbones / "musicnn_msd_mtt.onnx"
    if not stacked.exists():
        stack_backbones([backbones / "MSD_musicnn.onnx", backbones / "MTT_musicnn.onnx"],
                        stacked)
    emo = read_4q(data, "emotion")
    gen = read_4q(data, "genre")
    assert [e.path for e in emo.examples] == [e.path for e in gen.examples]
    backbone = OnnxBackbone(stacked, ("penultimate",))
    if threads:  # OnnxBackbone opens its session on every available core; pin it
        from tagger.onnxsession import open_session
        backbone.session = open_session(backbone.model_bytes, threads)
    spec = ClipSpec(SAMPLE_RATE, CLIP_SECONDS, CLIP_SECONDS, MUSICNN_FEATURES)
    t0 = time.perf_counter()
    clips, kept = FeatureCache(cache).extract([e.path for e in emo.examples], spec, backbone,
                                              desc="embeddings")
    seconds = time.perf_counter() - t0
    words = list(QUADRANT_WORDS.values())
    mood = np.array([words.index(emo.examples[i].labels[0]) for i in kept])
    y_gen = gen.targets(kept)
    groups = np.array([emo.examples[i].group for i in kept])
    paths = [str(emo.examples[i].path) for i in kept]
    return clips, mood, y_gen, list(gen.labels), groups, paths, seconds


# ----------------------------------------------------------------------------- heads

def _fit(x, y, c, multi):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression(C=c, max_iter=5000)
    return make_pipeline(StandardScaler(), OneVsRestClassifier(lr) if multi else lr).fit(x, y)


def _score(task, y, p):
    """Higher is better: accuracy (mood) or mean ROC-AUC over labels with both classes (genre)."""
    from sklearn.metrics import roc_auc_score

    if task == "mood":
        return float(np.mean(p.argmax(1) == y))
    cols = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in cols]))


def _choose_c(task, x, y, groups, seed):
    """C of the grid with the best inner grouped 3-fold score on the outer training side."""
    from sklearn.model_selection import GroupKFold

    inner = GroupKFold(n_splits=3, shuffle=True, random_state=seed)  # sklearn >= 1.6
    scores = []
    for c in GRID:
        p = np.zeros((len(x), y.shape[1] if task == "genre" else 4))
        for tr, te in inner.split(x, y if task == "mood" else None, groups):
            p[te] = _fit(x[tr], y[tr], c, task == "genre").predict_proba(x[te])
        scores.append(_score(task, y, p))
    return GRID[int(np.argmax(scores))], scores


def cross_validate(task, clips, y, groups, strat, cols, folds, seed):
    """Out-of-fold probabilities of the track-mean LR, on track means and per clip (averaged),
    for the C picked by inner CV and for each fixed C of the grid; plus per-fold rows."""
    from sklearn.model_selection import StratifiedGroupKFold

    xm = np.stack([c[:, cols].mean(0) for c in clips])
    width = y.shape[1] if task == "genre" else 4
    oof = {k: np.zeros((len(xm), width)) for k in ("mean", "clips")}
    fixed = {c: np.zeros((len(xm), width)) for c in GRID}
    fold_of = np.zeros(len(xm), int)
    chosen = []
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (tr, te) in enumerate(outer.split(xm, strat, groups)):
        fold_of[te] = k
        c, _ = _choose_c(task, xm[tr], y[tr], groups[tr], seed)
        chosen.append(c)
        model = _fit(xm[tr], y[tr], c, task == "genre")
        oof["mean"][te] = model.predict_proba(xm[te])
        oof["clips"][te] = [model.predict_proba(clips[i][:, cols]).mean(0) for i in te]
        for cc in GRID:
            fixed[cc][te] = _fit(xm[tr], y[tr], cc, task == "genre").predict_proba(xm[te])
    return oof, fixed, fold_of, chosen


def genre_metrics(y, p):
    from sklearn.metrics import f1_score, roc_auc_score

    aucs = [roc_auc_score(y[:, j], p[:, j]) if 0 < y[:, j].sum() < len(y) else np.nan
            for j in range(y.shape[1])]
    return {"auc": float(np.nanmean(aucs)), "per_label_auc": aucs,
            "micro_f1": float(f1_score(y, p >= THRESHOLD, average="micro", zero_division=0))}


def summarise(task, y, oof, fixed, fold_of, chosen, labels=None):
    folds = sorted(set(fold_of))
    out = {"C_chosen_per_fold": chosen}
    for how, p in oof.items():
        if task == "mood":
            per = [float(np.mean(p[fold_of == k].argmax(1) == y[fold_of == k])) for k in folds]
            out[how] = {"acc": float(np.mean(p.argmax(1) == y)), "acc_folds": per}
        else:
            whole = genre_metrics(y, p)
            per = [genre_metrics(y[fold_of == k], p[fold_of == k]) for k in folds]
            out[how] = {"auc": whole["auc"], "micro_f1": whole["micro_f1"],
                        "auc_folds": [m["auc"] for m in per],
                        "micro_f1_folds": [m["micro_f1"] for m in per],
                        "per_label_auc": dict(zip(labels, whole["per_label_auc"]))}
    out["fixed_C"] = {}
    for c, p in fixed.items():
        if task == "mood":
            out["fixed_C"][str(c)] = {"acc": float(np.mean(p.argmax(1) == y))}
        else:
            m = genre_metrics(y, p)
            out["fixed_C"][str(c)] = {"auc": m["auc"], "micro_f1": m["micro_f1"]}
    return out


def _ms(v):
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--backbones", type=Path, default=Path("/tmp/study14/backbones"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/study14/cache"))
    ap.add_argument("--json", type=Path, default=Path("/tmp/study14/results.json"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-count", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time", action="store_true",
                    help="also time each backbone alone (onnxruntime, batch 32, --threads)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    clips, mood, y_gen, gen_labels, groups, paths, seconds = load_embeddings(
        args.data, args.backbones, args.cache, args.threads)
    n_clips = sum(len(c) for c in clips)
    counts = y_gen.sum(0)
    keep = counts >= args.min_count
    y_gen, gen_labels = y_gen[:, keep], [l for l, k in zip(gen_labels, keep) if k]
    print(f"{len(clips)} tracks, {len(set(groups))} artists, {n_clips} clips of 3 s; "
          f"embedding pass {seconds:.0f} s ({seconds / n_clips * 1000:.1f} ms/clip incl. cache "
          f"hits); genre labels with >= {args.min_count} tracks: "
          + ", ".join(f"{l} ({int(c)})" for l, c in zip(gen_labels, y_gen.sum(0))))

    results = {"tracks": len(clips), "artists": len(set(groups)), "clips": n_clips,
               "folds": args.folds, "seed": args.seed, "grid": GRID, "threshold": THRESHOLD,
               "genre_labels": {l: int(c) for l, c in zip(gen_labels, y_gen.sum(0))},
               "models": {}}
    sets = {"MSD": slice(0, 200), "MTT": slice(200, 400), "MSD+MTT": slice(0, 400)}
    for name, cols in sets.items():
        res = {}
        for task, y in (("mood", mood), ("genre", y_gen)):
            t0 = time.perf_counter()
            oof, fixed, fold_of, chosen = cross_validate(task, clips, y, groups, mood, cols,
                                                         args.folds, args.seed)
            res[task] = summarise(task, y, oof, fixed, fold_of, chosen, gen_labels)
            log.info("%s %s: %.0f s", name, task, time.perf_counter() - t0)
        results["models"][name] = res
        m, g = res["mood"], res["genre"]
        print(f"\n== {name} (quoted: mood {QUOTED[name]['mood_acc']}, "
              f"genre AUC {QUOTED[name]['genre_auc']})")
        print(f"mood acc  track-mean {m['mean']['acc']:.3f} (folds {_ms(m['mean']['acc_folds'])})"
              f"  per-clip avg {m['clips']['acc']:.3f}  C/fold {m['C_chosen_per_fold']}")
        print(f"genre AUC track-mean {g['mean']['auc']:.3f} (folds {_ms(g['mean']['auc_folds'])})"
              f"  per-clip avg {g['clips']['auc']:.3f}  C/fold {g['C_chosen_per_fold']}")
        print(f"genre micro-F1@{THRESHOLD} track-mean {g['mean']['micro_f1']:.3f} "
              f"(folds {_ms(g['mean']['micro_f1_folds'])})  per-clip avg "
              f"{g['clips']['micro_f1']:.3f}")
        print("fixed C (track mean): " + "; ".join(
            f"C={c}: acc {m['fixed_C'][c]['acc']:.3f} AUC {g['fixed_C'][c]['auc']:.3f} "
            f"F1 {g['fixed_C'][c]['micro_f1']:.3f}" for c in m["fixed_C"]))
        print("per-label AUC: " + ", ".join(
            f"{l} {a:.2f}" for l, a in sorted(g["mean"]["per_label_auc"].items(),
                                              key=lambda kv: kv[1])))

    if args.time:
        from trainer.musicnn import time_per_clip
        results["ms_per_clip"] = {
            m: time_per_clip(args.backbones / f"{m}.onnx", threads=args.threads)
            for m in ("MSD_musicnn", "MTT_musicnn")}
        print(f"\nbackbone ms per 3-s clip (onnxruntime, batch 32, {args.threads} thread): "
              + ", ".join(f"{k} {v:.1f}" for k, v in results["ms_per_clip"].items()))
    results["embedding_pass_seconds"] = seconds
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
