"""The ``MODEL_CARD.md`` of a training run: what the model is, what it saw, how well it does.

Kept apart from :mod:`trainer.train` because it only reads what a run produced (its config,
data, split and metrics) and writes prose; changing the card's wording never touches training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .architectures import filters_for
from .datasets import Dataset
from .features_cache import OnnxBackbone
from .splits import Splits

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from .train import TrainConfig

__all__ = ["write_card"]


def _headline(metrics: dict) -> str:
    """One line of a split's headline figures (accuracy, or F1 and ROC-AUC)."""
    parts = []
    if "accuracy" in metrics:
        parts.append(f"accuracy {metrics['accuracy']:.3f} (balanced "
                     f"{metrics['balanced_accuracy']:.3f})")
    if "micro_f1" in metrics:
        auc = metrics["macro_roc_auc"]
        parts.append(f"micro F1 {metrics['micro_f1']:.3f}, macro F1 "
                     f"{metrics['macro_f1'] or 0:.3f} at threshold {metrics['threshold']:.2f}, "
                     f"macro ROC-AUC {'n/a' if auc is None else f'{auc:.3f}'}")
    return "; ".join(parts)


def write_card(run_dir: Path, config: TrainConfig, dataset: Dataset, splits: Splits,
               metrics: dict, model: "keras.Model", backbone: OnnxBackbone | None,
               model_path: Path) -> None:
    """Write a short ``RUN_DIR/MODEL_CARD.md``: what the model is, what it saw, how well it does.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    config : TrainConfig
        The run's configuration.
    dataset : Dataset
        The labelled data.
    splits : Splits
        Its train / validation / test split.
    metrics : dict
        What ``metrics.json`` holds.
    model : keras.Model
        The trained model.
    backbone : OnnxBackbone, optional
        The frozen backbone of a head, None for a CNN.
    model_path : Path
        The exported ONNX file.
    """
    counts = dataset.label_counts()
    groups = "artist" if any(e.group.startswith("artist:") for e in dataset.examples) else "track"
    if backbone is None:
        arch = (f"log-mel CNN from scratch: {config.blocks} x (Conv2D 5x5, BatchNorm, ReLU, "
                f"MaxPool), filters {list(filters_for(config.filters, config.blocks))}, global "
                f"average pooling, dropout {config.dropout}, dense output")
    else:
        arch = (f"frozen backbone `{backbone.path.name}` (sha256 {backbone.sha256[:12]}), "
                f"embedding {'+'.join(backbone.outputs)} ({backbone.dim} values), dense head "
                f"{list(config.hidden)}")
    activation = "one sigmoid per label" if (config.task == "genre" or dataset.multi_label) \
        else "softmax"
    threshold = metrics["threshold"]
    decision = ("argmax" if threshold is None
                else f"threshold {threshold:g} ({metrics['threshold_source']})")
    hop = config.hop_seconds or config.clip_seconds / 2
    lines = [
        f"# {config.model_name} {config.version}",
        "",
        f"`{model_path.name}`: a genreml {config.task} model ({activation}), "
        f"{len(dataset.labels)} labels.",
        "",
        "## Data",
        f"- {dataset.name}: {len(dataset)} tracks, "
        f"{'multi' if dataset.multi_label else 'single'}-label.",
        f"- Labels (tracks): {', '.join(f'{k} ({v})' for k, v in counts.items())}.",
        f"- Split by {groups} (none on two sides), seed {config.seed}: {len(splits.train)} "
        f"train, {len(splits.validation)} validation, {len(splits.test)} test tracks "
        "(`splits.json`).",
        "",
        "## Model and training",
        f"- {arch}; {model.count_params():,} Keras parameters.",
        f"- Input: {config.sample_rate} Hz, {config.clip_seconds:g} s clips, log-mel "
        f"{config.features.n_frames} x {config.features.n_mels}; training clips every "
        f"{hop:g} s, evaluation clips without overlap.",
        f"- Adam lr {config.learning_rate:g}, batch {config.batch_size}; early stopping and "
        f"LR halving on the validation loss: {metrics['epochs_run']} epochs run, best epoch "
        f"{metrics['best_epoch']}. Class weights: "
        f"{'balanced' if config.class_weights else 'none'}.",
        f"- Decision: {decision}.",
        "",
        "## Results (track level, clip probabilities averaged as the tagger does)",
        (f"- Test, {metrics['test']['tracks']} tracks, exported ONNX through "
         f"`tagger.predict.Analyzer`: {_headline(metrics['test'])}." if metrics["test"] else
         "- Test: not evaluated yet (`genreml evaluate RUN_DIR`)."),
        f"- Validation: {_headline(metrics['validation'])}.",
        f"- ONNX vs Keras max abs difference: {metrics['export_parity_max_abs_diff']:.1e}.",
        "",
        "## Limits",
        f"- Small data: {len(splits.test)} test tracks, so figures move by several points with "
        "the seed. Music unlike the training set (other eras, production, cultures) may be "
        "tagged poorly.",
    ]
    if groups == "track":
        lines.append("- Split by track only (no artist information): artist and recording "
                     "effects can inflate the test figures.")
    text = "\n".join(lines) + "\n"
    (run_dir / "MODEL_CARD.md").write_text(text)
