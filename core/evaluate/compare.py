"""Side-by-side comparison of 2-5 saved runs: their settings, which of them differ, final metrics and curves.

    cmp = compare(["runs/20240101-101010-ants-ab12", "runs/20240102-090000-ants-cd34"])
    cmp.labels                  # one short, distinct name per run (its folder name), in the order given
    cmp.settings["optimizer"]   # ["adam", "sgd"]: one value per run, for every TrainConfig field and the dataset
    cmp.differing               # ["optimizer", "learning_rate"]: the settings whose values are not all equal
    cmp.metrics                 # one dict per run: status, final validation/training metrics, evaluation, timings
    cmp.history                 # long-form rows {"run", "epoch", "metric", "value"} for overlaid curves

Only the small files of each run are read (config.json, run.json, metrics.json, history.csv, evaluation.json):
no model is loaded and TensorFlow is never imported, so a page can call this on every rerun. Each config.json
goes through ``TrainConfig.from_dict``, so a run saved before an option existed shows that option's default
(which is what it trained with); keys this version does not know are listed after the known ones.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.evaluate.evaluation import load_evaluation
from core.util.errors import UserError
from core.workspace import runs

MIN_RUNS, MAX_RUNS = 2, 5
# Final metrics in the order a table shows them; metrics.json keys unless prefixed "eval_" (evaluation.json).
METRICS = (
    "status", "started", "val_accuracy", "val_loss", "train_accuracy", "train_loss", "best_val_accuracy",
    "best_epoch", "eval_accuracy", "eval_loss", "eval_images", "epochs_completed", "train_images", "val_images",
    "trainable", "frozen", "path", "precision", "seconds",
)  # fmt: skip
# history.csv columns that say where a row is, not what was measured.
HISTORY_KEYS = ("epoch", "phase")


@dataclass
class Comparison:
    labels: list[str]  # one per run, in the order given
    paths: list[Path]
    settings: dict[str, list[Any]]  # setting -> one value per run (None: the run does not have it)
    differing: list[str]  # settings whose values are not all the same, in settings order
    metrics: list[dict[str, Any]]  # one row per run: {"run": label, **METRICS}
    history: list[dict[str, Any]]  # {"run", "epoch" (1-based over the whole run), "metric", "value"[, "phase"]}


def compare(run_dirs: list[str | os.PathLike]) -> Comparison:
    """Compare 2-5 saved runs (folders); raise ``UserError`` for too few or too many, or a folder that is no run."""
    paths = list(dict.fromkeys(Path(p).resolve() for p in run_dirs))  # the same run twice is one run
    if not MIN_RUNS <= len(paths) <= MAX_RUNS:
        raise UserError(f"Choose between {MIN_RUNS} and {MAX_RUNS} different runs to compare; got {len(paths)}.")
    for path in paths:
        runs.check_run(path)
    labels = run_labels(paths)
    infos = [_read(path / runs.MARKER) for path in paths]
    settings = _settings(paths, infos)
    curves = [_history(label, path) for label, path in zip(labels, paths, strict=True)]
    return Comparison(
        labels=labels,
        paths=paths,
        settings=settings,
        differing=[name for name, values in settings.items() if _differ(values)],
        metrics=[_metrics(*args) for args in zip(labels, paths, infos, curves, strict=True)],
        history=[row for rows in curves for row in rows],
    )


def run_labels(paths: list[Path]) -> list[str]:
    """Each run's folder name; runs with the same folder name (from different parents) get their parent's too."""
    names = [p.name for p in paths]
    labels = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    # Still equal (e.g. a/x/run and b/x/run): number them by position.
    return [f"{label} ({i + 1})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def _read(path: Path) -> dict[str, Any]:
    """A JSON object from a run folder, or {} when it is missing or not an object (older or damaged runs)."""
    try:
        data = runs.read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _settings(paths: list[Path], infos: list[dict[str, Any]]) -> dict[str, list[Any]]:
    raw = [_read(path / "config.json") for path in paths]
    configs = [TrainConfig.from_dict(c).to_dict() for c in raw]
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = list(dict.fromkeys(k for c in raw for k in c if k not in known))  # from newer versions of the app
    settings: dict[str, list[Any]] = {
        "dataset": [info.get("dataset") or _read(path / "dataset.json").get("source") for path, info in
                    zip(paths, infos, strict=True)],
        "classes": [_classes(path) for path in paths],
    }  # fmt: skip
    settings |= {name: [c[name] for c in configs] for name in known}
    settings |= {name: [c.get(name) for c in raw] for name in unknown}
    return settings


def _classes(path: Path) -> str | None:
    try:
        names = runs.read_json(path / "classes.json")
    except (OSError, ValueError):
        return None
    return ", ".join(map(str, names)) if isinstance(names, list) else None


def _differ(values: list[Any]) -> bool:
    return any(v != values[0] for v in values[1:])


def _metrics(label: str, path: Path, info: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    saved = _read(path / "metrics.json")
    row: dict[str, Any] = {key: saved.get(key) for key in METRICS}
    row["status"], row["started"] = info.get("status"), info.get("started")
    curve = [r for r in history if r["metric"] == "val_accuracy"]
    if curve:
        best = max(curve, key=lambda r: r["value"])  # the first epoch that reached it
        row["best_val_accuracy"], row["best_epoch"] = best["value"], best["epoch"]
    evaluation = load_evaluation(path)
    if evaluation is not None:
        row["eval_accuracy"], row["eval_loss"], row["eval_images"] = (
            evaluation.accuracy, evaluation.loss, evaluation.images
        )  # fmt: skip
    return {"run": label, **row}


def _history(label: str, path: Path) -> list[dict[str, Any]]:
    """history.csv as long-form rows; numeric columns become metrics, whatever their names.

    Values that are not finite (a diverged loss logged as nan or inf) are left out: a chart cannot draw them.
    """
    file = path / "history.csv"
    if not file.is_file():
        return []
    rows = []
    with file.open(newline="") as f:
        # The row's position, not its "epoch" column: a later phase may count its epochs from 0 again.
        for epoch, record in enumerate(csv.DictReader(f), start=1):
            where = {"run": label, "epoch": epoch}
            if record.get("phase") not in (None, ""):
                where["phase"] = _number(record["phase"])
            for key, text in record.items():
                value = _number(text)
                if key in HISTORY_KEYS or key is None or not isinstance(value, float) or not math.isfinite(value):
                    continue
                rows.append({**where, "metric": key, "value": value})
    return rows


def _number(text: Any) -> float | str | None:
    if text in (None, ""):
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)
