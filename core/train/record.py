"""What a finished training writes: its metrics, and the run folder with its marker written last.

metrics = record.metrics(config, dataset, model, strategy, rows, completed, phases, split, trust, ...)
record.save(run_dir, model, dataset, config, split, metrics, status, started, owner)
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.data.duplicates import SplitCheck
from core.model import distribute
from core.model.build import param_counts, resolve_precision
from core.workspace import runs


def metrics(
    config: TrainConfig, dataset: Dataset, model, strategy, rows: list[dict], completed: int, done_phases: list[dict],
    split, trust, *, val_loss: float, val_accuracy: float, seconds: float, stats: dict, prepare_seconds: float,
    fit_seconds: float, leaks: SplitCheck | None, weights: dict[int, float] | None,
) -> dict[str, Any]:  # fmt: skip
    """The run's metrics.json: the saved model's validation scores, the path each phase took, timings, the
    calibration, what was left out and why."""
    train_idx, val_idx = split
    metrics = {
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "train_loss": rows[-1]["loss"] if rows else None,
        "train_accuracy": rows[-1]["accuracy"] if rows else None,
        "epochs_completed": completed,
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "seconds": round(seconds, 1),
        "precision": resolve_precision(config.precision),
        "path": done_phases[-1]["path"],
        "path_reason": done_phases[-1]["path_reason"],
        ("feature_seconds" if stats else "load_seconds"): round(prepare_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        **param_counts(model),
    }
    if names := distribute.devices(strategy):  # recorded only when not on TensorFlow's default strategy
        metrics["distribution"] = {
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "devices": names,
        }
    metrics["calibration"] = {
        "temperature": round(trust.temperature, 4),
        "ece_before": trust.ece_before,
        "ece_after": trust.ece_after,
        "threshold": trust.threshold,
        "coverage": trust.coverage,
    }
    if config.exclude:
        metrics["excluded_images"] = len(config.exclude)
    if leaks is not None:
        metrics.update(leaks.metrics())  # val_duplicates_dropped (and which), val_duplicates, test_duplicates
    if weights:
        metrics["class_weights"] = {dataset.classes[c]: round(w, 4) for c, w in sorted(weights.items())}
    if config.augmented:
        metrics["augmentation"] = augmentation_summary(config)
    if config.two_phase:
        metrics["phases"] = done_phases
        if len(done_phases) > 1:
            metrics["phase2_start_epoch"] = done_phases[1]["start_epoch"]
    if stats:
        metrics["cache_hits"], metrics["cache_misses"] = stats["hits"], stats["misses"]
        if stats["misses"]:
            metrics["feature_images_per_second"] = round(stats["misses"] / max(stats["feature_seconds"], 1e-9), 2)
    return metrics


def balanced_weights(labels: list[int]) -> dict[int, float]:
    """Each class's weight for ``class_weight="balanced"``: n / (k * n_c) over the k classes with training images,
    so every class weighs as much in the loss as if all had the same number of images (scikit-learn's rule)."""
    counts = Counter(labels)
    return {c: len(labels) / (len(counts) * n) for c, n in counts.items()}


def augmentation_summary(config: TrainConfig) -> str:
    """The augmentation a config asks for, in words: 'flip, rotation 15°, zoom 0.1'."""
    parts = ["flip"] if config.augment_flip else []
    if config.augment_rotation:
        parts.append(f"rotation {config.augment_rotation:g}°")
    for name in ("zoom", "translation", "contrast", "brightness"):
        if value := getattr(config, f"augment_{name}"):
            parts.append(f"{name} {value:g}")
    return ", ".join(parts)


def save(run_dir: Path, model, dataset: Dataset, config: TrainConfig, split, metrics: dict, status: str, started: float,
         owner: str = "") -> None:  # fmt: skip
    """The run folder: the model, its classes, config, metrics, dataset report and split; the marker last."""
    train_idx, val_idx = split
    model.save(run_dir / "model.keras")
    runs.write_json(run_dir / "classes.json", dataset.classes)
    runs.write_json(run_dir / "config.json", config.to_dict())
    runs.write_json(run_dir / "metrics.json", metrics)
    runs.write_json(run_dir / "dataset.json", dataset.report.to_dict())
    runs.write_json(
        run_dir / "split.json",
        {
            "root": str(dataset.root.resolve()),  # while it exists, evaluation can find the images again
            "train": [dataset.items[i].path for i in train_idx],
            "val": [dataset.items[i].path for i in val_idx],
            "test": [it.path for it in dataset.items if it.split == "test"],
            # each file's class (an index into classes.json): a version may have relabelled a file or added one
            # whose path names no class folder
            "labels": {
                "train": [dataset.items[i].label for i in train_idx],
                "val": [dataset.items[i].label for i in val_idx],
                "test": [it.label for it in dataset.items if it.split == "test"],
            },
        },
    )
    # The marker goes last: a folder without it is never listed or loaded, so a crash mid-save shows nothing.
    runs.write_json(
        run_dir / runs.MARKER,
        {
            "format": runs.RUN_FORMAT,
            "version": runs.RUN_VERSION,
            "status": status,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "dataset": dataset.report.source,
            "dataset_id": dataset.id,  # the saved dataset (core.workspace.datasets), "" when trained from a zip path
            "dataset_version": dataset.version or None,  # its version (core.workspace.versions), None for a zip path
            "owner": owner,  # who may delete it when sign-in is on ('' = everyone's)
            "classes": len(dataset.classes),
            "head": config.head,
            "weights": config.weights if config.weights in ("imagenet", "none") else "file",
            "image_size": config.image_size,
            "optimizer": config.optimizer,
            "val_accuracy": metrics["val_accuracy"],
            "epochs_completed": metrics["epochs_completed"],
        },
    )
