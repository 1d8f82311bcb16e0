"""Saved runs: one folder per trained model, shared by everyone on the same server.

    runs/<run-id>/
        run.json        marker + summary: format, status (completed/stopped), dates, dataset, key metrics
        model.keras     the whole model (preprocessing, VGG16, head), loaded with safe_mode
        classes.json    class names in output order
        config.json     the TrainConfig
        history.csv     per-epoch metrics (Keras' CSVLogger)
        metrics.json    final metrics
        dataset.json    the dataset report
        split.json      which files were used for training and validation (and the dataset folder)
        evaluation.json metrics on the validation or test images, once evaluated

The location is ``$CLASSIFIER_RUNS_DIR`` (default ``./runs``). Only folders carrying this project's
``run.json`` marker are ever listed or loaded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from core.errors import UserError

RUN_FORMAT = "vgg16-classifier-run"
RUN_VERSION = 1
RUNS_ENV = "CLASSIFIER_RUNS_DIR"
MARKER = "run.json"


def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def new_run_id(name: str) -> str:
    """A unique, sortable, file-name-safe run id: ``<date>-<time>-<name>-<random>``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).stem).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def new_run_dir(name: str, parent: Path | None = None) -> Path:
    """Create and return an empty, uniquely named run folder."""
    path = (parent or runs_dir()) / new_run_id(name)
    path.mkdir(parents=True)
    return path


def claim_dir(path: str | os.PathLike) -> Path:
    """Use ``path`` as a new run folder; refuse one that already holds files so nothing is overwritten."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{path} already exists and is not empty; choose another output folder or delete it.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: readers on other sessions never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def is_run(path: str | os.PathLike) -> bool:
    try:
        return read_json(Path(path) / MARKER).get("format") == RUN_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_run(path: str | os.PathLike) -> Path:
    """Return the run folder, or raise ``UserError`` if it is not a complete run saved by this app."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give the folder of a saved run.")
    if not is_run(path):
        raise UserError(f"{path} is not a run saved by this app (no {MARKER}); only saved runs can be loaded.")
    missing = [f for f in ("model.keras", "classes.json", "config.json") if not (path / f).is_file()]
    if missing:
        raise UserError(f"The run {path.name} is incomplete (missing {', '.join(missing)}).")
    return path


def list_runs(parent: Path | None = None) -> list[dict[str, Any]]:
    """Every saved run under ``parent`` (default: the runs folder), newest first, with its summary."""
    parent = parent or runs_dir()
    if not parent.is_dir():
        return []
    found = []
    for path in parent.iterdir():
        if path.is_dir() and is_run(path) and (path / "model.keras").is_file():
            found.append({**read_json(path / MARKER), "id": path.name, "path": str(path)})
    return sorted(found, key=lambda r: r.get("finished", ""), reverse=True)


def delete_run(path: str | os.PathLike) -> None:
    """Delete a saved run folder (only one that carries the marker)."""
    path = Path(path)
    # The marker is enough: a listed run that lost classes.json (or any other file) must stay deletable.
    if not (path.is_dir() and is_run(path)):
        raise UserError(f"{path} is not a run saved by this app (no {MARKER}); only saved runs can be deleted.")
    shutil.rmtree(path)


def history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Per-epoch metrics of a run (from Keras' CSVLogger), or [] when none were recorded."""
    import csv

    file = Path(path) / "history.csv"
    if not file.is_file():
        return []
    with file.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


EXPORT_FILES = (
    "model.keras", "classes.json", "config.json", "metrics.json", "history.csv", "dataset.json", "evaluation.json",
    MARKER,
)  # fmt: skip


def export_zip(path: str | os.PathLike) -> bytes:
    """The run as a zip (model, classes, config, metrics, history) for download."""
    import io
    import zipfile

    path = check_run(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in EXPORT_FILES:
            if (path / name).is_file():
                zf.write(path / name, f"{path.name}/{name}")
    return buf.getvalue()
