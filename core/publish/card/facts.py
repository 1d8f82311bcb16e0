"""The model card's facts: every number and setting it shows, read from the run's own files, and the owner's words.

set_purpose(run_dir, "Sorts ants from bees in the garden survey.", user)   # the owner's own words
purpose(run_dir)                                                           # "" until someone writes one
facts(run_dir)                       # every fact the card shows, as data (for tests and other code)
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from core.config import IMBALANCED, TrainConfig
from core.evaluate.evaluation import load_evaluation
from core.imaging.spec import preprocessing_spec
from core.model import calibration
from core.publish.card.recipe import settings_rows
from core.util import names
from core.util.errors import UserError
from core.util.files import package_versions, sha256_of
from core.workspace import access, runs

PURPOSE_FILE = "card.json"  # in the run's folder: {"purpose": "...", "by": "...", "at": "..."}
MAX_PURPOSE = 2000
PLACEHOLDER = (
    "Nobody has written yet what this model is for. Its owner can say so on the Runs page (Model card), "
    "before anyone relies on it."
)
PACKAGES = ("tensorflow", "keras", "numpy", "pillow")
MIN_VAL_IMAGES = calibration.MIN_IMAGES  # below it there is no calibration, and the validation accuracy is rough
MAX_TABLE_CLASSES = 12  # the confusion matrix as a Markdown table up to this many classes; wider is unreadable
SPLIT_FOLDERS = {"train", "val", "valid", "validation", "test"}  # a "split" dataset's top folders (core.data.dataset)
NOT_RECORDED = "–"
NONE_OF_THESE_FILE = "none_of_these.json"  # core.model.ood's record (read here as json: no TensorFlow)
METHODS = {"mahalanobis-tied-ledoit-wolf": "the smallest squared Mahalanobis distance of the image's penultimate "
           "features (the input of the last layer) to a class mean, with one covariance shared by every class and "
           "shrunk by the Ledoit-Wolf rule (Lee et al. 2018)"}  # fmt: skip


class CardError(UserError):
    """The run's files cannot make a card (missing or damaged); the message says which and what to do."""


# ---------------------------------------------------------------------------------------------- the owner's words


def purpose(run_dir: str | os.PathLike) -> str:
    """The owner's line about what the model is for, or ""."""
    try:
        data = runs.read_json(Path(run_dir) / PURPOSE_FILE)
    except (OSError, ValueError):
        return ""
    return str(data.get("purpose") or "") if isinstance(data, dict) else ""


def set_purpose(run_dir: str | os.PathLike, text: str, user: str = access.GUEST) -> None:
    """Save what the model is for (only the run's owner or an admin may, when sign-in is on)."""
    info = runs.read_run(run_dir)
    access.check(user, info.owner, f"describe the run {info.id}")
    names.check(text, "The description", lines=True)
    runs.write_json(
        Path(run_dir) / PURPOSE_FILE,
        {"purpose": text.strip()[:MAX_PURPOSE], "by": user, "at": time.strftime("%Y-%m-%dT%H:%M:%S")},
    )


# ---------------------------------------------------------------------------------------------- the facts


def percent(x: float | None) -> str:
    """How the card writes a share: '66.7%' ('–' when not recorded)."""
    return NOT_RECORDED if x is None else f"{x:.1%}"


def number(x: float | None, digits: int = 4) -> str:
    """How the card writes a loss or another plain number: '0.6931' ('–' when not recorded)."""
    return NOT_RECORDED if x is None else f"{x:.{digits}f}"


def facts(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Every fact the card shows, as plain data (json-serialisable).

    Keys: ``run``, ``title``, ``purpose``, ``dataset``, ``training`` (rows of setting/label/value/text),
    ``metrics``, ``evaluation`` (None before one), ``calibration`` (None for a run saved before it existed),
    ``none_of_these`` (``none_of_these``), ``limits`` (rows of key/text, only those that apply), ``preprocessing``
    (``core.imaging.spec.preprocessing_spec``),
    ``versions`` and ``model`` (file, bytes, sha256, the Keras version it was saved with).
    Raises ``CardError`` (a ``UserError``) for a folder that is no run or whose files are damaged.
    """
    path = runs.check_run(run_dir)  # UserError for a folder without the marker or without the model
    # read_run forgives unreadable files with defaults; a card must not present defaults as what the run did.
    config_data = _required(path, "config.json", dict)
    classes = _required(path, "classes.json", list)
    metrics = _required(path, "metrics.json", dict)
    try:
        info = runs.read_run(path)
        config = TrainConfig.from_dict(config_data)
    except (AttributeError, TypeError, ValueError):
        raise CardError(
            f"The run {path.name} is damaged: its run.json or config.json is not what a run saves."
        ) from None
    report = _optional(path / "dataset.json", dict)
    split = _optional(path / "split.json", dict)
    ev = load_evaluation(path)
    cal = calibration.load(path)

    dataset = _dataset(info.dataset, [str(c) for c in classes], report, split, metrics, info.dataset_version)
    evaluation = _evaluation(ev) if ev is not None else None
    trust = _calibration(cal, metrics)
    result = {
        "run": {
            "id": info.id,
            "dataset": info.dataset,
            "dataset_version": info.dataset_version,
            "status": info.status,
            "started": info.started,
            "finished": info.finished,
            "owner": info.owner,
        },
        "title": info.dataset or info.id,
        "purpose": purpose(path),
        "dataset": dataset,
        "training": settings_rows(config, metrics, dataset),
        "metrics": _metrics(config, metrics),
        "evaluation": evaluation,
        "calibration": trust,
        "none_of_these": none_of_these(path),
        "preprocessing": preprocessing_spec(config.image_size, config.resize, config.backbone),
        "versions": package_versions(PACKAGES),
        "model": _model_file(path / "model.keras"),
    }
    result["limits"] = _limits(info.status, config, result)
    return result


def none_of_these(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What the run's "none of these" is (core.model.ood's none_of_these.json, read without TensorFlow):
    ``available``; when it is, ``method`` (its name and ``words``), ``rate`` (the target false-alarm rate),
    ``threshold``, ``validation_images`` and ``validation_flagged`` (the share of them above it); when not,
    ``reason`` (a sentence) and the rest None."""
    data = _optional(Path(run_dir) / NONE_OF_THESE_FILE, dict)
    empty = dict.fromkeys(("method", "words", "rate", "threshold", "validation_images", "validation_flagged"))
    if data is None:
        return {"available": False, **empty, "reason": "the run was trained before “none of these” existed."}
    if not data.get("fitted"):
        return {"available": False, **empty, "reason": str(data.get("reason") or "it was not fitted.")}
    try:
        found = {"method": str(data["method"]), "rate": float(data["rate"]), "threshold": float(data["threshold"]),
                 "validation_images": int(data["validation_images"]),
                 "validation_flagged": float(data["validation_flagged"])}  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return {"available": False, **empty, "reason": f"its {NONE_OF_THESE_FILE} cannot be read."}
    return {"available": True, **found, "words": METHODS.get(found["method"], found["method"]), "reason": ""}


def _required(path: Path, name: str, kind: type) -> Any:
    try:
        data = runs.read_json(path / name)
    except FileNotFoundError:
        raise CardError(f"The run {path.name} has no {name}; it was not saved completely, so it has no card.") from None
    except (OSError, ValueError):
        raise CardError(f"The run {path.name} is damaged: its {name} cannot be read.") from None
    if not isinstance(data, kind):
        raise CardError(f"The run {path.name} is damaged: its {name} does not hold what a run saves there.")
    return data


def _optional(path: Path, kind: type) -> Any:
    try:
        data = runs.read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, kind) else None


def _class_of(file: str, classes: set[str], layout: str) -> str | None:
    """The class folder of a file in split.json (a path relative to the dataset's folder, maybe under a wrapper
    folder and, for a split dataset, under train/, val/ or test/)."""
    parts = PurePosixPath(file).parts[:-1]
    for i, part in enumerate(parts):
        if part in classes and (layout != "split" or (i > 0 and parts[i - 1].lower() in SPLIT_FOLDERS)):
            return part
    return None


def _labelled(split: dict | None, classes: list[str]) -> dict[str, dict[str, int]] | None:
    """Images per part and class from split.json's own labels (runs since dataset versions), else None."""
    labels = (split or {}).get("labels")
    if not isinstance(labels, dict):
        return None
    used = {part: dict.fromkeys(classes, 0) for part in ("train", "val", "test")}
    try:
        for part, counts in used.items():
            for label in labels.get(part) or []:
                counts[classes[int(label)]] += 1
    except (TypeError, ValueError, IndexError):
        return None
    return used


def _dataset(
    name: str, classes: list[str], report: dict | None, split: dict | None, metrics: dict, version: int | None = None
) -> dict:
    """Per class: its images in the dataset, and those the run trained, validated and could test on."""
    report = report or {}
    counts = report.get("counts") if isinstance(report.get("counts"), dict) else {}
    layout = str(report.get("layout") or "classes")
    # split.json says what the run really used (after dropped duplicates and excluded images): count from it when
    # every file's class can be read off its path, else fall back to the dataset's own train/val/test folders.
    used: dict[str, dict[str, int]] | None = _labelled(split, classes)
    if split and used is None:
        used = {part: dict.fromkeys(classes, 0) for part in ("train", "val", "test")}
        known = set(classes)
        for part in used:
            for file in split.get(part) or []:
                cls = _class_of(str(file), known, layout)
                if cls is None:
                    used = None
                    break
                used[part][cls] += 1
            if used is None:
                break
    rows = []
    for cls in classes:
        own = counts.get(cls) if isinstance(counts.get(cls), dict) else {}
        row = {"class": cls, "images": sum(int(v) for v in own.values()) if own else None}
        for part in ("train", "val", "test"):
            row[part] = used[part][cls] if used is not None else (int(own[part]) if part in own else None)
        rows.append(row)
    total = report.get("total")
    if total is None and all(r["images"] is not None for r in rows):
        total = sum(r["images"] for r in rows)
    return {
        "name": name,
        "version": version,  # of the saved dataset (core.workspace.versions); None for a zip path
        "layout": layout,
        "classes": rows,
        "total": total,
        "train_images": metrics.get("train_images"),
        "val_images": metrics.get("val_images"),
        "test_images": sum(r["test"] or 0 for r in rows),
        "skipped": len(report.get("skipped") or []),
        "counted_from": "split.json" if used is not None else "dataset.json",
    }


def _metrics(config: TrainConfig, metrics: dict) -> dict[str, Any]:
    keys = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "epochs_completed", "train_images",
            "val_images", "val_duplicates_dropped", "val_duplicates", "test_duplicates", "seconds")  # fmt: skip
    return {**{k: metrics.get(k) for k in keys}, "epochs_planned": config.total_epochs}


def _evaluation(ev) -> dict[str, Any]:
    return {
        "split": {"val": "validation", "test": "test"}.get(ev.split, ev.split or ev.source),
        "data": ev.data,
        "created": ev.created,
        "images": ev.images,
        "accuracy": ev.accuracy,
        "loss": ev.loss,
        # top-k says something only when k is below the number of classes (then every answer is in the top k)
        "top_k": ev.top_k if ev.top_k < len(ev.classes) else None,
        "top_k_accuracy": ev.top_k_accuracy if ev.top_k < len(ev.classes) else None,
        "classes": list(ev.classes),
        "confusion": ev.confusion,
        "per_class": [
            {k: row.get(k) for k in ("class", "precision", "recall", "f1", "support")} for row in ev.per_class
        ],
    }


def _calibration(report: calibration.Report | None, metrics: dict) -> dict[str, Any] | None:
    if report is None:
        old = metrics.get("calibration")  # metrics.json keeps the key numbers too
        if not isinstance(old, dict):
            return None
        report = calibration.Report(
            temperature=old.get("temperature") or 1.0,
            calibrated=(old.get("temperature") or 1.0) != 1.0,
            ece_before=old.get("ece_before"),
            ece_after=old.get("ece_after"),
            threshold=old.get("threshold"),
            coverage=old.get("coverage"),
        )
    return {
        "calibrated": report.calibrated,
        "reason": report.reason,
        "temperature": report.temperature,
        "images": report.images,
        "split": {"val": "validation"}.get(report.split, report.split),
        "ece_before": report.ece_before,
        "ece_after": report.ece_after,
        "threshold": report.threshold,
        "coverage": report.coverage,
        "accuracy": report.accepted_accuracy,
        "target": report.target,
        "threshold_source": report.threshold_source,
    }


def _limits(status: str, config: TrainConfig, f: dict[str, Any]) -> list[dict[str, str]]:
    """The known limits that apply to this run, each with a sentence a stakeholder understands."""
    found: dict[str, str] = {}
    m, data = f["metrics"], f["dataset"]
    if config.weights == "none":
        found["random_weights"] = (
            "The model started from random weights, not ImageNet: with a few hundred photos it learns far less "
            "than a pretrained one would."
        )
    sizes = {r["class"]: r["images"] if r["images"] is not None else r["train"] for r in data["classes"]}
    sizes = {k: v for k, v in sizes.items() if v}
    if len(sizes) >= 2:
        big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
        if sizes[big] >= IMBALANCED * sizes[small]:
            remedy = (
                "training weighed the classes to make up for it (class weights: balanced), yet"
                if config.class_weight == "balanced"
                else "training did not weigh the classes, so"
            )
            found["imbalance"] = (
                f"The classes are imbalanced: '{big}' has {sizes[big]} images, '{small}' only {sizes[small]} "
                f"({sizes[big] / sizes[small]:.1f}×); {remedy} the overall accuracy can look good while '{small}' "
                "is often missed: read its recall."
            )
    leaks = [(m.get("val_duplicates") or 0, "validation"), (m.get("test_duplicates") or 0, "test")]
    leaks = [(n, f"{n} {where} image{'s' if n != 1 else ''}") for n, where in leaks if n]
    if leaks:
        are = "is an exact or near copy" if sum(n for n, _ in leaks) == 1 else "are exact or near copies"
        found["leaks"] = (
            f"{' and '.join(words for _, words in leaks)} {are} of training images: the model has seen them, so "
            "the scores on them flatter it."
        )
    if m.get("val_images") is not None and m["val_images"] < MIN_VAL_IMAGES:
        found["small_validation"] = (
            f"Only {m['val_images']} validation images: the validation accuracy is rough, and the probabilities "
            f"could not be calibrated (that needs at least {MIN_VAL_IMAGES})."
        )
    if f["evaluation"] is None:
        found["not_evaluated"] = (
            "Not evaluated yet: the numbers are the validation scores from training; an evaluation (Evaluate page) "
            "adds the confusion matrix and each class's precision and recall."
        )
    if status == "stopped":
        found["stopped"] = (
            f"Training was stopped early: {m.get('epochs_completed') or 0} of {m['epochs_planned']} epochs completed."
        )
    return [{"key": k, "text": t} for k, t in found.items()]


def _model_file(path: Path) -> dict[str, Any]:
    # A .keras file is a zip whose metadata.json names the Keras version that saved it: no Keras needed to read it.
    saved = {}
    try:
        with zipfile.ZipFile(path) as zf:
            saved = json.loads(zf.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_of(path),
        "keras_version": saved.get("keras_version") if isinstance(saved, dict) else None,
        "saved": saved.get("date_saved") if isinstance(saved, dict) else None,
    }
