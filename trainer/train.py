"""One training run: dataset -> group split -> clip features -> Keras model -> ONNX -> metrics.

A run folder holds everything needed to judge and use the model:

==================  ===========================================================================
``<name>.onnx``     the head, next to its backbone file (``genreml analyze --models RUN_DIR``)
``parts/``          intermediates (the bare Keras head of a backbone run, as ONNX)
``config.json``     the :class:`TrainConfig` of the run
``splits.json``     the files of each split, with labels and groups
``history.json``    Keras' per-epoch losses and metrics
``metrics.json``    test metrics (through the exported model and the tagger's Analyzer),
                    validation metrics, the threshold and the export parity
``confusion.png``   test confusion matrix (single-label data)
``MODEL_CARD.md``   what the model is, what it saw, how well it does
==================  ===========================================================================

Everything is chosen on the validation split (early stopping, learning-rate schedule, the genre
threshold); the test split is used once, at the end. The run's settings are
:class:`trainer.config.TrainConfig`; the card's prose is written by :mod:`trainer.model_card`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from pathlib import Path

import numpy as np
import onnx

from tagger.features import FeatureSettings
from tagger.model import HeadSpec, load_models

from .architectures import build_cnn, build_head, compile_model, filters_for, label_weights
from .config import BACKBONES, EMBEDDINGS, TrainConfig, TrainError, feature_settings
from .datasets import Dataset, load_dataset
from .evaluate import aggregate_tracks, evaluate_models, task_metrics, tune_threshold
from .export import (
    check_parity,
    join,
    keras_to_onnx,
    save_model,
)
from .split import save_split
from .features_cache import ClipSpec, FeatureCache, OnnxBackbone, compute_features
from .model_card import write_card
from .splits import Splits, leaked_groups, split_by_group, write_splits

import keras  # noqa: E402  (architectures silenced TensorFlow's logging first)

log = logging.getLogger(__name__)

__all__ = ["BACKBONES", "EMBEDDINGS", "TrainConfig", "TrainError", "feature_settings", "train"]

PARITY_CLIPS = 64


# --------------------------------------------------------------------------- inputs


def _run_dir(config: TrainConfig) -> Path:
    if config.out:
        run_dir = Path(config.out)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise TrainError(f"run folder {run_dir} exists and is not empty")
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{config.model_name}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _backbone(config: TrainConfig) -> OnnxBackbone:
    """The frozen backbone of a ``musicnn`` run; converted (once, cached) when no ONNX file is
    given. Its metadata, when present, fixes the sample rate, clip and features."""
    path = config.backbone_onnx
    if path is None:
        from .features_cache import default_cache_dir

        path = default_cache_dir().parent / "backbones" / f"{config.musicnn_model}.onnx"
        if not path.is_file():
            try:
                from .musicnn import convert_backbone
            except ImportError as err:
                raise TrainError(f"no --backbone-onnx and no musicnn converter: {err}") from err
            log.info("converting %s to %s", config.musicnn_model, path)
            convert_backbone(config.musicnn_model, path)
    try:
        backbone = OnnxBackbone(path, config.embedding)
    except Exception as err:  # onnxruntime's load errors have no common type
        raise TrainError(f"backbone {path}: {str(err).splitlines()[0]}") from err
    meta = backbone.metadata
    if "genreml.features" in meta:
        config.features = FeatureSettings.from_dict(json.loads(meta["genreml.features"]))
        config.sample_rate = int(meta.get("genreml.sample_rate", config.sample_rate))
        config.clip_seconds = float(meta.get("genreml.clip_seconds", config.clip_seconds))
        log.info("backbone %s: %d Hz, %.2f s clips, %d x %d patches", Path(path).name,
                 config.sample_rate, config.clip_seconds, config.features.n_frames,
                 config.features.n_mels)
    try:
        backbone.check_features(config.features)
    except ValueError as err:
        raise TrainError(str(err)) from err
    return backbone


@dataclasses.dataclass
class _Inputs:
    """Per-file clip inputs (patches, or embeddings with a backbone) of the training and
    validation splits, with the example indices of the files that decoded."""

    train: list[np.ndarray]
    train_idx: list[int]
    validation: list[np.ndarray]
    validation_idx: list[int]

    def clips(self, dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Stacked clips of a split; every clip inherits its track's targets."""
        arrays, idx = getattr(self, split), getattr(self, f"{split}_idx")
        return np.concatenate(arrays), np.repeat(dataset.targets(idx),
                                                 [len(a) for a in arrays], axis=0)


def _inputs(config: TrainConfig, dataset: Dataset, splits: Splits, spec: ClipSpec,
            backbone: OnnxBackbone | None, run_dir: Path) -> _Inputs:
    """Clip inputs of the training split (clips every ``hop_seconds``) and the validation
    split (no overlap, as the tagger), cached; records the split and skipped files in
    ``splits.json``."""
    cache = FeatureCache(config.cache_dir)
    progress = config.verbose != 0
    hop = config.hop_seconds or config.clip_seconds / 2
    out = []
    for name, indices, clip_spec in (("train", splits.train, spec.with_hop(hop)),
                                     ("validation", splits.validation, spec)):
        paths = [dataset.examples[i].path for i in indices]
        arrays, kept = cache.extract(paths, clip_spec, backbone, desc=f"{name} features",
                                     progress=progress)
        out += [arrays, [indices[k] for k in kept]]
    inputs = _Inputs(*out)
    usable = set(inputs.train_idx) | set(inputs.validation_idx)
    skipped = [str(dataset.examples[i].path) for i in (*splits.train, *splits.validation)
               if i not in usable]
    write_splits(run_dir / "splits.json", dataset, splits, skipped)
    if not inputs.train or not inputs.validation:
        raise TrainError("no decodable audio in the training or validation split")
    return inputs


# --------------------------------------------------------------------------- model


def _build(config: TrainConfig, dataset: Dataset, sigmoid: bool,
           backbone: OnnxBackbone | None, train_y: np.ndarray) -> tuple["keras.Model", dict | None]:
    """The compiled model and, for softmax heads, Keras class weights."""
    n = len(dataset.labels)
    if backbone is None:
        f = config.features
        model = build_cnn(f.n_frames, f.n_mels, n, config.task, sigmoid,
                          filters_for(config.filters, config.blocks), dropout=config.dropout)
    else:
        model = build_head(backbone.dim, n, config.task, sigmoid, config.hidden,
                           dropout=config.dropout)
    weights = label_weights(train_y) if config.class_weights else None
    compile_model(model, sigmoid, config.learning_rate, weights if sigmoid else None)
    class_weight = ({i: float(w) for i, w in enumerate(weights)}
                    if weights is not None and not sigmoid else None)
    return model, class_weight


def _fit(model: "keras.Model", config: TrainConfig, train: tuple[np.ndarray, np.ndarray],
         validation: tuple[np.ndarray, np.ndarray], class_weight: dict | None) -> dict:
    """Train with early stopping (best weights restored) and a plateau schedule, both on the
    validation loss. Returns the history (lists per metric)."""
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=max(1, config.patience // 2), min_lr=1e-5),
    ]
    history = model.fit(*train, validation_data=validation, epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, callbacks=callbacks,
                        class_weight=class_weight, verbose=config.verbose)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _track_probs(model: "keras.Model", arrays: list[np.ndarray]) -> np.ndarray:
    """Track probabilities of Keras predictions, aggregated as the tagger does."""
    clip_probs = model.predict(np.concatenate(arrays), batch_size=256, verbose=0)
    return aggregate_tracks(np.split(clip_probs, np.cumsum([len(a) for a in arrays])[:-1]))


# --------------------------------------------------------------------------- export


def _export(model: "keras.Model", config: TrainConfig, dataset: Dataset, threshold: float | None,
            backbone: OnnxBackbone | None, mel: np.ndarray, run_dir: Path) -> tuple[Path, float]:
    """Write the run's backbone file and ``RUN_DIR/<name>.onnx`` (its head) with genreml
    metadata, after checking the whole graph against Keras on held-out patches ``mel``.
    Returns the head file's path and the parity (max abs difference).

    A musicnn backbone keeps its name and bytes, so heads trained on it in other runs name the
    same sha256; a ``cnn`` is cut before its last dense layer into ``<name>-backbone.onnx``.
    """
    task = config.task
    proto = keras_to_onnx(model)
    extra = {"trainer": "genreml trainer", "dataset": dataset.name, "seed": str(config.seed)}
    if backbone is None:
        expected = {task: model.predict(mel, verbose=0)}
        backbone_name, layers = f"{config.model_name}-backbone", ("dense_input",)
    else:
        save_model(proto, run_dir / "parts" / f"{task}_head.onnx")
        expected = {task: model.predict(backbone.embed(mel), verbose=0)}
        proto = join(onnx.load_from_string(backbone.model_bytes), backbone.outputs, {task: proto})
        backbone_name = backbone.metadata.get("genreml.backbone", backbone.path.stem)
        layers = tuple(backbone.outputs)
    diff = check_parity(proto, {"mel": mel}, expected)
    head = HeadSpec(task, task, dataset.labels, threshold)
    _, (path,) = save_split(proto, run_dir, backbone_name, "1", layers, config.model_name,
                            config.version, config.sample_rate, config.clip_seconds,
                            config.features, [head], **extra)
    log.info("exported %s (parity %.2e)", path, diff)
    return path, diff


# --------------------------------------------------------------------------- run


def train(config: TrainConfig) -> Path:
    """Run one training and return its run folder.

    Raises
    ------
    TrainError
        Bad configuration or dataset.
    trainer.export.ExportError
        The exported ONNX model disagrees with Keras.
    """
    from .datasets import DatasetError

    config.check()
    try:
        dataset = load_dataset(config.dataset, config.data_path, config.task, config.min_count,
                               config.label_mode)
        splits = split_by_group(dataset, config.fractions, config.seed)
    except (DatasetError, ValueError) as err:
        raise TrainError(str(err)) from err
    if len(dataset.labels) < 2:
        raise TrainError(f"{dataset.name}: training needs two labels, found {dataset.labels}")
    if leaked_groups(dataset, splits):  # split_by_group guarantees this; a cheap tripwire
        raise TrainError("a group landed on two sides of the split")
    backbone = _backbone(config) if config.backbone == "musicnn" else None
    run_dir = _run_dir(config)
    # a sigmoid per label for genres (decided by threshold) and multi-label emotions
    sigmoid = config.task == "genre" or dataset.multi_label
    progress = config.verbose != 0
    log.info("%s: %d tracks, %d labels, split %d/%d/%d -> %s", dataset.name, len(dataset),
             len(dataset.labels), len(splits.train), len(splits.validation), len(splits.test),
             run_dir)

    spec = ClipSpec(config.sample_rate, config.clip_seconds, config.clip_seconds,
                    config.features)
    inputs = _inputs(config, dataset, splits, spec, backbone, run_dir)
    _write_json(run_dir / "config.json", config.to_dict())  # early: a failed run stays legible

    keras.utils.set_random_seed(config.seed)
    train_xy = inputs.clips(dataset, "train")
    model, class_weight = _build(config, dataset, sigmoid, backbone, train_xy[1])
    history = _fit(model, config, train_xy, inputs.clips(dataset, "validation"), class_weight)
    del train_xy  # the stacked training clips can be most of the process's memory
    threshold, val_metrics = _validate(model, config, dataset, inputs)

    if backbone is None:
        mel = np.concatenate(inputs.validation)[:PARITY_CLIPS]
    else:  # held-out patches, not embeddings: the exported graph starts at the log-mel
        mel = np.concatenate([compute_features(dataset.examples[i].path, spec)
                              for i in inputs.validation_idx[:4]])[:PARITY_CLIPS]
    model_path, parity = _export(model, config, dataset, threshold, backbone, mel, run_dir)

    test_metrics = None
    if config.evaluate_test:  # once: through the exported file and the tagger's own Analyzer
        test_metrics = evaluate_models(load_models(model_path, device="cpu"), config.task,
                                       [dataset.examples[i].path for i in splits.test],
                                       dataset.targets(splits.test), dataset.labels,
                                       dataset.multi_label, out_dir=run_dir, progress=progress)
    source = "validation (best micro F1)" if config.tune_threshold else "fixed"
    metrics = {"test": test_metrics, "validation": val_metrics, "threshold": threshold,
               "threshold_source": source if threshold is not None else None,
               "export_parity_max_abs_diff": parity,
               "epochs_run": len(history["loss"]),
               "best_epoch": int(np.argmin(history["val_loss"])) + 1}
    _write_json(run_dir / "metrics.json", metrics)
    _write_json(run_dir / "history.json", history)
    write_card(run_dir, config, dataset, splits, metrics, model, backbone, model_path)
    return run_dir


def _validate(model: "keras.Model", config: TrainConfig, dataset: Dataset,
              inputs: _Inputs) -> tuple[float | None, dict]:
    """The genre threshold (fixed, or tuned on the validation tracks) and validation metrics
    at track level."""
    targets = dataset.targets(inputs.validation_idx)
    probs = _track_probs(model, inputs.validation)
    threshold = None
    if config.task == "genre":
        threshold = tune_threshold(targets, probs) if config.tune_threshold else config.threshold
    metrics = task_metrics(targets, probs, dataset.labels, dataset.multi_label, threshold)
    if threshold is not None and threshold != config.threshold:
        # both figures, so a card can say what tuning bought over the default threshold
        metrics["micro_f1_at_default"] = task_metrics(
            targets, probs, dataset.labels, dataset.multi_label, config.threshold)["micro_f1"]
    return threshold, metrics


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))
