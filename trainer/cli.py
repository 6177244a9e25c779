"""``genreml train`` and ``genreml evaluate``: subcommands added to genreml's parser.

``tagger/cli.py`` must not import the trainer, so it finds :func:`register` through the
``genreml.commands`` entry point. Importing this module is cheap: TensorFlow, scikit-learn and
matplotlib are imported only when a command runs. Each command returns an exit status: 0 ok,
1 failure (e.g. an export that fails its parity check), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["register", "cmd_train", "cmd_evaluate"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TRAIN_EXTRA = "genreml {command} needs the train extra: pip install '.[train]' in a genreml clone"
# trainer.datasets.DATASET_KINDS, repeated so that building genreml's parser imports nothing
# heavy (tests/test_datasets.py checks they agree)
DATASET_KINDS = ("gtzan", "emotify", "4q", "csv")


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _error(message: str) -> None:
    print(f"genreml: {message}", file=sys.stderr)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _dataset_arg(args: argparse.Namespace) -> tuple[str, Path] | None:
    if args.dataset is None:
        return None
    kind, path = args.dataset
    if kind not in DATASET_KINDS:
        raise ValueError(f"--dataset KIND must be one of {', '.join(DATASET_KINDS)}, not {kind!r}")
    return kind, Path(path)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``evaluate`` subcommands to genreml's subparsers (which give every
    command ``-q``/``-v``: ``args.quiet`` drops the progress bars)."""
    p = subparsers.add_parser(
        "train", help="train a genre or emotion model on labelled music (train extra)",
        description="Train a model on a labelled music collection and export it as a genreml "
                    "ONNX model, with splits, history, metrics and a model card in RUN_DIR.")
    p.add_argument("--dataset", nargs=2, required=True, metavar=("KIND", "PATH"),
                   help=f"dataset layout ({', '.join(DATASET_KINDS)}) and its folder "
                        "(or manifest CSV)")
    p.add_argument("--task", choices=("genre", "emotion"), required=True)
    p.add_argument("--backbone", choices=("cnn", "musicnn"), default="cnn",
                   help="cnn: log-mel CNN from scratch; musicnn: frozen pre-trained backbone "
                        "plus a dense head (default: cnn)")
    p.add_argument("--backbone-onnx", type=Path, default=None, metavar="FILE",
                   help="musicnn backbone as ONNX (default: convert --musicnn-model, cached)")
    p.add_argument("--musicnn-model", choices=("MSD_musicnn", "MTT_musicnn"),
                   default="MSD_musicnn")
    p.add_argument("--embedding", default="penultimate",
                   help="backbone output(s) the head reads, comma-separated: penultimate, "
                        "mean_pool, max_pool (default: penultimate)")
    p.add_argument("--out", type=Path, default=None, metavar="RUN_DIR",
                   help="run folder (default: runs/<name>-<time>)")
    p.add_argument("--name", default=None, help="model name (default: <dataset>-<task>-<backbone>)")
    p.add_argument("--version", default="1.0.0", help="model version (default: 1.0.0)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: cnn 1.5e-3, musicnn head 3e-4)")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience (epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", type=_floats, default=(0.7, 0.15, 0.15), metavar="TR,VA,TE",
                   help="train,validation,test fractions (default: 0.7,0.15,0.15)")
    p.add_argument("--min-count", type=int, default=1,
                   help="drop labels with fewer tracks; in a multi-label set, tracks left "
                        "without labels stay as all-negative examples")
    p.add_argument("--label-mode", choices=("dominant", "binary"), default="dominant",
                   help="emotify emotions: most-voted (single-label) or above-median share "
                        "per emotion (multi-label)")
    p.add_argument("--threshold", type=float, default=0.2,
                   help="genre decision threshold (default: 0.2)")
    p.add_argument("--tune-threshold", action="store_true",
                   help="choose the genre threshold on the validation split (best micro F1)")
    p.add_argument("--no-class-weights", dest="class_weights", action="store_false",
                   help="do not weigh rare labels up")
    p.add_argument("--no-test", dest="evaluate_test", action="store_false",
                   help="leave the test split untouched (compare runs on validation metrics, "
                        "then `genreml evaluate` the chosen one)")
    g = p.add_argument_group("clips and features")
    g.add_argument("--sample-rate", type=int, default=16000)
    g.add_argument("--clip-seconds", type=float, default=3.0)
    g.add_argument("--hop-seconds", type=float, default=None,
                   help="seconds between training clips (default: half a clip)")
    g.add_argument("--n-mels", type=int, default=96)
    g.add_argument("--n-fft", type=int, default=512)
    g.add_argument("--stft-hop", type=int, default=256)
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache (default: ~/.cache/genreml/features)")
    g = p.add_argument_group("model size")
    g.add_argument("--filters", type=int, default=8,
                   help="cnn: filters of the first block, doubling per block (default: 8)")
    g.add_argument("--blocks", type=int, default=5, help="cnn: convolution blocks (default: 5)")
    g.add_argument("--hidden", type=_ints, default=(256,),
                   help="musicnn head: hidden layer sizes, comma-separated (default: 256)")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout before the output (default: cnn 0.2, musicnn head 0.5)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "evaluate", help="re-evaluate a trained run (train extra)",
        description="Evaluate a run's exported model at track level, on the run's recorded "
                    "test split or on a whole other dataset.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--dataset", nargs=2, default=None, metavar=("KIND", "PATH"),
                   help="evaluate on this dataset instead of the run's test split")
    p.add_argument("--label-mode", choices=("dominant", "binary"), default=None)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    """``genreml train``: run one training, print where the run went and its test metrics."""
    missing = _missing("tensorflow", "tf2onnx", "onnx", "sklearn", "matplotlib")
    if missing:
        _error(f"{TRAIN_EXTRA.format(command='train')} (missing: {', '.join(missing)})")
        return EXIT_USAGE
    try:
        kind, path = _dataset_arg(args)
    except ValueError as err:
        _error(str(err))
        return EXIT_USAGE
    from .datasets import DatasetError
    from .export import ExportError
    from .train import TrainConfig, TrainError, feature_settings, train

    try:
        config = TrainConfig(
            dataset=kind, data_path=str(path), task=args.task, backbone=args.backbone,
            backbone_onnx=str(args.backbone_onnx) if args.backbone_onnx else None,
            musicnn_model=args.musicnn_model,
            embedding=tuple(e.strip() for e in args.embedding.split(",") if e.strip()),
            out=str(args.out) if args.out else None, name=args.name, version=args.version,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            patience=args.patience, seed=args.seed, fractions=args.splits,
            sample_rate=args.sample_rate, clip_seconds=args.clip_seconds,
            hop_seconds=args.hop_seconds,
            features=feature_settings(args.sample_rate, args.clip_seconds, args.n_mels,
                                      args.n_fft, args.stft_hop),
            filters=args.filters, blocks=args.blocks, dropout=args.dropout, hidden=args.hidden,
            min_count=args.min_count, label_mode=args.label_mode,
            tune_threshold=args.tune_threshold, threshold=args.threshold,
            class_weights=args.class_weights, evaluate_test=args.evaluate_test,
            cache_dir=str(args.cache_dir) if args.cache_dir else None,
            verbose=0 if args.quiet else "auto")
        run_dir = train(config)
    except (TrainError, DatasetError, ValueError) as err:
        _error(str(err))
        return EXIT_USAGE
    except ExportError as err:
        _error(f"export failed: {err}")
        return EXIT_FAILED
    from .evaluate import format_metrics

    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"run: {run_dir}")
    split = "test" if metrics["test"] else "validation"  # --no-test: validation only
    print(format_metrics({**metrics[split], "task": config.task,
                          "evaluated_on": f"the {split} split"}))
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``genreml evaluate``: print a run's track-level metrics."""
    missing = _missing("sklearn", "matplotlib")
    if missing:
        _error(f"{TRAIN_EXTRA.format(command='evaluate')} (missing: {', '.join(missing)})")
        return EXIT_USAGE
    from tagger.model import ModelError

    from .datasets import DatasetError
    from .evaluate import evaluate_run, format_metrics

    try:
        dataset = _dataset_arg(args)
        if not (args.run_dir / "config.json").is_file():
            raise ValueError(f"{args.run_dir} is not a training run (no config.json)")
        kind, path = dataset if dataset else (None, None)
        metrics = evaluate_run(args.run_dir, kind, path, args.label_mode,
                               progress=not args.quiet)
    except (DatasetError, ModelError, ValueError, OSError) as err:
        _error(str(err))
        return EXIT_USAGE
    print(json.dumps(metrics) if args.json else format_metrics(metrics))
    return EXIT_OK
