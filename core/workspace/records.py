"""Saved datasets as the workspace holds them: their folders and ids, their records, the database's index of them.

    datasets_dir() / saved_id / FILES     # the extracted images
    get(saved_id); list_datasets()        # SavedDataset rows, most recently used first
    sync()                                # the index rebuilt from the folders when the database was lost

The folders are the source of truth (``record.json`` has enough to rebuild a row); the ``datasets`` table of the
workspace database (``core.workspace.db``) indexes them for listing and remembers when each was last used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from core.util.errors import UserError
from core.util.files import sha256_of
from core.workspace import db
from core.workspace.folders import MAX_AGE, work_root
from core.workspace.runs import list_runs, read_json

FOLDER = "datasets"  # inside the workspace
FILES = "files"
DATASET_FILE = "dataset.json"
RECORD_FILE = "record.json"
FORMAT = "vgg16-classifier-dataset"
VERSION = 1
ID_LENGTH = 16
# Jobs in these states are over; any other state (queued, running, stopping...) still needs its dataset's files.
ACTIVE_JOB = (
    "SELECT 1 FROM jobs WHERE dataset_id = ? "
    "AND state NOT IN ('completed', 'stopped', 'failed', 'cancelled', 'interrupted') LIMIT 1"
)

_ID = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")
log = logging.getLogger(__name__)


class UnknownDataset(UserError):
    """No saved dataset has this id (deleted, or a mistyped link)."""


class Busy(UserError):
    """A queued or running job uses the dataset: it cannot be deleted now."""


@dataclass(frozen=True)
class SavedDataset:
    """One saved dataset as the pages and the CLI list it (times are seconds since the epoch)."""

    id: str
    name: str
    source: str  # the zip's file name
    classes: int
    images: int
    bytes: int  # on disk, extracted
    added: float
    added_by: str  # an e-mail, or core.workspace.access.GUEST
    last_used: float
    # Only on what save_zip returns: the names of the datasets removed to keep within the disk budget.
    removed: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "removed"}


def datasets_dir() -> Path:
    return work_root() / FOLDER


def is_id(text: str | None) -> bool:
    """Whether ``text`` has the shape of a dataset id (plain hex: never a path)."""
    return bool(text) and _ID.fullmatch(text) is not None


def exists(dataset_id: str) -> bool:
    """Whether a saved dataset has this id (one look at its folder: cheap enough for every page run)."""
    return is_id(dataset_id) and (datasets_dir() / dataset_id / RECORD_FILE).is_file()


def zip_id(path: str | os.PathLike) -> str:
    """The id a zip would be saved under: the first hex digits of its sha256, read in chunks."""
    return sha256_of(path)[:ID_LENGTH]


def unknown(dataset_id: str) -> UnknownDataset:
    shown = dataset_id if len(dataset_id) <= 40 else dataset_id[:40] + "…"
    return UnknownDataset(f"There is no saved dataset {shown} on this server: it was deleted, or its id is mistyped.")


def folder_of(dataset_id: str) -> Path:
    """The dataset's folder; an id that is not plain hex never reaches the file system."""
    if not is_id(dataset_id):
        raise unknown(str(dataset_id))
    folder = datasets_dir() / dataset_id
    if not (folder / RECORD_FILE).is_file():
        raise unknown(dataset_id)
    return folder


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def read_record(folder: Path) -> dict:
    record = read_json(folder / RECORD_FILE)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{folder / RECORD_FILE} is not a dataset record")
    return record


def row(record: dict, last_used: float) -> tuple:
    return (
        record["id"], record["name"], record["source"], int(record["classes"]), int(record["images"]),
        int(record["bytes"]), float(record["added"]), record["added_by"], last_used,
    )  # fmt: skip


def insert(con: sqlite3.Connection, record: dict, last_used: float) -> None:
    con.execute(
        "INSERT INTO datasets (id, name, source, classes, images, bytes, added, added_by, last_used) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
        row(record, last_used),
    )


def saved_row(row: sqlite3.Row) -> SavedDataset:
    return SavedDataset(**{f.name: row[f.name] for f in fields(SavedDataset) if f.name != "removed"})


def mark_used(folder: Path, record: dict) -> None:
    """Mark the dataset as used now: in the database for listing and eviction, on the folder for sync()."""
    now = time.time()
    with db.connect(write=True) as con:
        insert(con, record, now)  # also restores a row that a lost database forgot
    with contextlib.suppress(OSError):  # deleted meanwhile: the caller finds out when it reads the files
        os.utime(folder)


def get(dataset_id: str) -> SavedDataset | None:
    """The saved dataset's record, or None (an id that is not plain hex is simply unknown)."""
    if not is_id(dataset_id):
        return None
    with db.connect() as con:
        row = con.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
    on_disk = (datasets_dir() / dataset_id / RECORD_FILE).is_file()
    if (row is not None) != on_disk:  # the database and the folders disagree: the folders are right
        sync()
        with db.connect() as con:
            row = con.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
    return saved_row(row) if row is not None else None


def list_datasets() -> list[SavedDataset]:
    """Every saved dataset, most recently used first."""
    query = "SELECT * FROM datasets ORDER BY last_used DESC, id"
    with db.connect() as con:
        rows = con.execute(query).fetchall()
    if {r["id"] for r in rows} != _ids_on_disk():
        sync()
        with db.connect() as con:
            rows = con.execute(query).fetchall()
    return [saved_row(r) for r in rows]


def _ids_on_disk() -> set[str]:
    root = datasets_dir()
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if is_id(p.name) and (p / RECORD_FILE).is_file()}


def sync() -> None:
    """Make the database's rows match the dataset folders: add the folders it lacks, drop rows without a folder.

    Also removes staging and trash folders left behind by a crash more than a day ago.
    """
    root = datasets_dir()
    found: dict[str, tuple[dict, float]] = {}
    if root.is_dir():
        cutoff = time.time() - MAX_AGE
        for folder in root.iterdir():
            if folder.name.startswith((".staging-", ".trash-")):
                try:
                    if folder.stat().st_mtime < cutoff:
                        shutil.rmtree(folder, ignore_errors=True)
                except OSError:
                    pass
                continue
            if not is_id(folder.name):
                continue
            try:
                record = read_record(folder)
                found[folder.name] = (record, max(float(record["added"]), folder.stat().st_mtime))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a complete dataset folder: leave it alone, and unlisted
    with db.connect(write=True) as con:
        known = {r["id"] for r in con.execute("SELECT id FROM datasets")}
        for gone in known - found.keys():
            con.execute("DELETE FROM datasets WHERE id = ?", (gone,))
        for new in found.keys() - known:
            record, last_used = found[new]
            insert(con, record, last_used)


def runs_using(dataset_id: str) -> list[str]:
    """Ids of the saved runs trained on the dataset (from their run.json markers, the source of truth)."""
    return [r["id"] for r in list_runs() if dataset_id and r.get("dataset_id") == dataset_id]


def folder_of_files(root: str | os.PathLike | None) -> Path | None:
    """The saved dataset's folder holding the images under ``root`` (a run's split.json names its root); None when
    ``root`` is not inside a saved dataset's files."""
    if not root:
        return None
    path = Path(root)
    for folder in path.parents:
        if (folder / RECORD_FILE).is_file() and path.is_relative_to(folder / FILES):
            return folder
    return None


def busy(saved: SavedDataset) -> Busy:
    return Busy(
        f"A queued or running job uses the dataset {saved.name}; stop it or let it finish, then delete the dataset."
    )


def remove(saved: SavedDataset) -> None:
    folder = datasets_dir() / saved.id
    trash = datasets_dir() / f".trash-{saved.id}-{secrets.token_hex(4)}"
    # One write transaction: a job cannot be queued on the dataset between the check and the removal, and the
    # folder leaves its place in one rename, so nobody opens half a dataset.
    with db.connect(write=True) as con:
        if con.execute(ACTIVE_JOB, (saved.id,)).fetchone():
            raise busy(saved)
        con.execute("DELETE FROM datasets WHERE id = ?", (saved.id,))
        try:
            folder.rename(trash)
        except FileNotFoundError:
            return  # removed by someone else already
    shutil.rmtree(trash, ignore_errors=True)


def all_rows() -> list[SavedDataset]:
    with db.connect() as con:
        return [saved_row(r) for r in con.execute("SELECT * FROM datasets ORDER BY last_used, id")]
