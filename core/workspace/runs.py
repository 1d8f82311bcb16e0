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

import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import settings
from core.config import TrainConfig
from core.util.errors import UserError
from core.workspace import access, db

RUN_FORMAT = "vgg16-classifier-run"
RUN_VERSION = 1
MARKER = "run.json"


def runs_dir() -> Path:
    return settings.current().runs_dir


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
    """Write JSON atomically: readers on other sessions never see half a file, and two writers at once each
    write a whole file of their own (a unique temporary name each) and the last one wins."""
    path = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # as a plain write would make it: readable by the server's other processes
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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


def delete_run(path: str | os.PathLike, user: str = access.GUEST) -> None:
    """Delete a saved run folder (only one that carries the marker), its training's job and chart points, and drop
    its model if one is loaded.

    Only the run's owner or an admin may (``core.workspace.access``); a run trained without sign-in is everyone's.
    """
    path = Path(path)
    # The marker is enough: a listed run that lost classes.json (or any other file) must stay deletable.
    if not (path.is_dir() and is_run(path)):
        raise UserError(f"{path} is not a run saved by this app (no {MARKER}); only saved runs can be deleted.")
    access.check(user, str(read_json(path / MARKER).get("owner") or ""), f"delete the run {path.name}")
    shutil.rmtree(path)
    try:
        with db.connect(write=True) as con:
            con.execute("DELETE FROM runs WHERE id = ?", (path.name,))
            # The training that made it (same id), once it has finished, and the points of its charts.
            if con.execute("DELETE FROM jobs WHERE id = ? AND finished IS NOT NULL", (path.name,)).rowcount:
                con.execute("DELETE FROM job_points WHERE job_id = ?", (path.name,))
    except UserError:  # the folder is the source of truth: the index catches up at its next sync
        pass
    if (predict := sys.modules.get("core.model.predict")) is not None:  # loaded models only: never load TensorFlow here
        predict.forget(path)


@dataclass(frozen=True)
class RunInfo:
    """A saved run as the pages show it: read from its files once, never by file name in a page."""

    id: str
    path: Path
    status: str  # completed or stopped
    started: str  # ISO date and time
    finished: str
    dataset: str
    classes: list[str]
    config: TrainConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    owner: str = ""  # the e-mail of whoever trained it when signed in; '' = everyone's
    dataset_id: str = (
        ""  # the saved dataset it was trained on (core.workspace.datasets), "" when trained from a zip path
    )

    @property
    def dataset_version(self) -> int | None:
        """The version of its saved dataset it trained on (core.workspace.versions); a run from before versions: 1,
        the dataset as saved. None when trained from a zip path."""
        if not self.dataset_id:
            return None
        return self.config.dataset_version or 1

    @property
    def val_accuracy(self) -> float | None:
        return self.metrics.get("val_accuracy")

    @property
    def epochs_completed(self) -> int:
        return int(self.metrics.get("epochs_completed") or 0)

    @property
    def phase2_start(self) -> int | None:
        return self.metrics.get("phase2_start_epoch")

    def history(self) -> list[dict[str, float]]:
        """Per-epoch metrics, epochs counted from 1."""
        return [{**r, "epoch": int(r["epoch"]) + 1} for r in history(self.path) if "epoch" in r]

    def summary(self) -> dict[str, Any]:
        """One row of the runs table."""
        return {
            "id": self.id,
            "finished": self.finished,
            "status": self.status,
            "dataset": self.dataset,
            "classes": len(self.classes),
            "val_accuracy": self.val_accuracy,
            "epochs": self.epochs_completed,
            "backbone": self.config.backbone,
            "head": self.config.head,
            "weights": self.config.weights if self.config.weights in ("imagenet", "none") else "file",
            "image_size": self.config.image_size,
            "optimizer": self.config.optimizer,
            "owner": self.owner,
        }


def _optional_json(path: Path, default: Any) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return default


def read_run(path: str | os.PathLike) -> RunInfo:
    """The run in ``path`` (a complete saved run, or ``UserError``)."""
    path = check_run(path)
    marker = read_json(path / MARKER)
    classes = _optional_json(path / "classes.json", [])
    return RunInfo(
        id=path.name,
        path=path,
        status=marker.get("status", "completed"),
        started=marker.get("started", ""),
        finished=marker.get("finished", ""),
        dataset=marker.get("dataset", ""),
        classes=list(classes) if isinstance(classes, list) else [],
        config=TrainConfig.from_dict(_optional_json(path / "config.json", {})),
        metrics=_optional_json(path / "metrics.json", {}) or {},
        owner=str(marker.get("owner") or ""),
        dataset_id=str(marker.get("dataset_id") or ""),
    )


def run_infos(parent: Path | None = None) -> list[RunInfo]:
    """Every complete saved run, newest first (a run whose files cannot be read is left out)."""
    if parent is None:
        with contextlib.suppress(UserError):  # the folders are the record: an unusable database changes nothing
            sync_index()
    found = []
    for summary in list_runs(parent):
        try:
            found.append(read_run(summary["path"]))
        except (UserError, OSError, ValueError, TypeError):
            continue
    return found


def find_run(run_id: str, parent: Path | None = None) -> RunInfo | None:
    """The saved run called ``run_id``, or None (an id is a folder name: nothing outside the runs folder)."""
    if not run_id or not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id) or run_id in (".", ".."):
        return None
    path = (parent or runs_dir()) / run_id
    try:
        return read_run(path) if path.is_dir() and (path / "model.keras").is_file() else None
    except (UserError, OSError, ValueError, TypeError):
        return None


def index_run(con, run_id: str) -> None:
    """Add or refresh one run in the database's index of the runs folder (inside the caller's transaction)."""
    path = runs_dir() / run_id
    if not is_run(path):
        con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        return
    m = read_json(path / MARKER)
    con.execute(
        "INSERT OR REPLACE INTO runs (id, dataset_id, owner, status, finished, val_accuracy) VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, m.get("dataset_id"), m.get("owner") or "", m.get("status", ""), m.get("finished", ""),
         m.get("val_accuracy")),
    )  # fmt: skip


def sync_index() -> None:
    """Bring the index in step with the runs folder, the source of truth: runs copied in or trained by the CLI are
    added, deleted folders dropped."""
    on_disk = {r["id"] for r in list_runs()}
    with db.connect() as con:
        indexed = {row["id"] for row in con.execute("SELECT id FROM runs")}
    if on_disk == indexed:
        return
    with db.connect(write=True) as con:
        for run_id in indexed - on_disk:
            con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        for run_id in on_disk - indexed:
            index_run(con, run_id)


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
