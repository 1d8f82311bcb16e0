"""Saved datasets: every uploaded zip is kept once on the server, keyed by its content, and found again by its id.

    saved = save_zip("ants.zip", owner="a@x.org", progress=bar)  # extracted once; the same zip again is instant
    ds = open_dataset(saved.id)         # the ingested Dataset from dataset.json: no folder scan, no image decoded
    list_datasets()                     # most recently used first
    rename(saved.id, "Ants v2", user); delete(saved.id, user, force=False); runs_using(saved.id)

In the workspace (``$CLASSIFIER_WORK_DIR``, default ``./work``)::

    datasets/<id>/
        files/          the zip's content, extracted by core.dataset's safe extraction
        dataset.json    the ingested Dataset: classes, items and report, paths relative to files/
        record.json     name, source, added, added_by, counts and size: enough to rebuild the database row
    datasets/.staging-*/    an extraction under way; renamed to <id>/ in one step once complete
    datasets/.trash-*/      a dataset being deleted

The id is the first 16 hex digits of the zip file's sha256 (64 bits: a collision between two different zips on one
server is not a practical worry), so uploading the same zip twice, from any session, gives one dataset. The folders
are the source of truth; the ``datasets`` table of the workspace database (core.db) indexes them for listing and
remembers when each was last used. ``sync()`` rebuilds that table from the folders when the database was lost.

**Space.** Only the images of a dataset are kept: a file that is not a usable image is listed in its report and
never stored. Each person has a quota, ``$CLASSIFIER_QUOTA_MB`` (default 4096, i.e. 4 GB; everyone without sign-in
shares one guest quota), and all saved datasets share a disk budget, ``$CLASSIFIER_DATASETS_MB`` (default 20480,
i.e. 20 GB). Both are checked from the zip's declared sizes before anything is extracted, and again on the bytes
really written. When a new dataset would overflow the budget, the least recently used datasets that the uploader
may lose are removed — their own and guests', never another signed-in user's, never one a queued or running job
uses; ``plan_save`` says which before anything is removed, and an upload that only another user's data could make
room for is refused in words. Runs trained on a removed dataset keep working for Classify; evaluating them on it
needs the zip again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from core import access, db, names
from core.dataset import Dataset, Item, Limits, Progress, Report, human_size, load_dataset
from core.errors import UserError
from core.runs import list_runs, read_json, write_json
from core.workspace import MAX_AGE, work_root

FOLDER = "datasets"  # inside the workspace
FILES = "files"
DATASET_FILE = "dataset.json"
RECORD_FILE = "record.json"
FORMAT = "vgg16-classifier-dataset"
VERSION = 1
ID_LENGTH = 16
BUDGET_ENV = "CLASSIFIER_DATASETS_MB"
DEFAULT_BUDGET_MB = 20 * 1024
QUOTA_ENV = "CLASSIFIER_QUOTA_MB"
DEFAULT_QUOTA_MB = 4 * 1024
MAX_NAME = 100
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


class NoRoom(UserError):
    """Saving the dataset would go over the uploader's quota, or over the disk budget with nothing they may remove."""


class InUse(UserError):
    """Saved runs were trained on the dataset; ``delete(..., force=True)`` deletes it all the same."""

    def __init__(self, message: str, runs: list[str]):
        super().__init__(message)
        self.runs = runs


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
    added_by: str  # an e-mail, or core.access.GUEST
    last_used: float
    # Only on what save_zip returns: the names of the datasets removed to keep within the disk budget.
    removed: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "removed"}


# ---------------------------------------------------------------------------------------------- paths and ids


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
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:ID_LENGTH]


def _megabytes(env: str, default: float) -> int:
    raw = os.environ.get(env, "").strip()
    try:
        mb = float(raw) if raw else default
    except ValueError:
        mb = -1
    if not 0 < mb < float("inf"):
        raise UserError(f"{env} must be a positive number of megabytes (it is {raw!r}).")
    return int(mb * 1024**2)


def budget_bytes() -> int:
    """The disk space all saved datasets share ($CLASSIFIER_DATASETS_MB)."""
    return _megabytes(BUDGET_ENV, DEFAULT_BUDGET_MB)


def quota_bytes() -> int:
    """The disk space one person's saved datasets may take ($CLASSIFIER_QUOTA_MB; guests share one)."""
    return _megabytes(QUOTA_ENV, DEFAULT_QUOTA_MB)


def _unknown(dataset_id: str) -> UnknownDataset:
    shown = dataset_id if len(dataset_id) <= 40 else dataset_id[:40] + "…"
    return UnknownDataset(f"There is no saved dataset {shown} on this server: it was deleted, or its id is mistyped.")


def _folder(dataset_id: str) -> Path:
    """The dataset's folder; an id that is not plain hex never reaches the file system."""
    if not is_id(dataset_id):
        raise _unknown(str(dataset_id))
    folder = datasets_dir() / dataset_id
    if not (folder / RECORD_FILE).is_file():
        raise _unknown(dataset_id)
    return folder


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


# ---------------------------------------------------------------------------------------------- records


def _read_record(folder: Path) -> dict:
    record = read_json(folder / RECORD_FILE)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{folder / RECORD_FILE} is not a dataset record")
    return record


def _row(record: dict, last_used: float) -> tuple:
    return (
        record["id"], record["name"], record["source"], int(record["classes"]), int(record["images"]),
        int(record["bytes"]), float(record["added"]), record["added_by"], last_used,
    )  # fmt: skip


def _insert(con: sqlite3.Connection, record: dict, last_used: float) -> None:
    con.execute(
        "INSERT INTO datasets (id, name, source, classes, images, bytes, added, added_by, last_used) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET last_used = max(last_used, excluded.last_used)",
        _row(record, last_used),
    )


def _saved(row: sqlite3.Row) -> SavedDataset:
    return SavedDataset(**{f.name: row[f.name] for f in fields(SavedDataset) if f.name != "removed"})


def _touch(folder: Path, record: dict) -> None:
    """Mark the dataset as used now: in the database for listing and eviction, on the folder for sync()."""
    now = time.time()
    with db.connect(write=True) as con:
        _insert(con, record, now)  # also restores a row that a lost database forgot
    with contextlib.suppress(OSError):  # deleted meanwhile: the caller finds out when it reads the files
        os.utime(folder)


# ---------------------------------------------------------------------------------------------- saving


def save_zip(
    path: str | os.PathLike,
    name: str | None = None,
    owner: str = access.GUEST,
    progress: Progress | None = None,
    limits: Limits | None = None,
) -> SavedDataset:
    """Keep the zip's dataset on the server (once per content) and return its record.

    A zip saved before (byte for byte) is not extracted again: its record comes back, marked as used now, with
    its own name and owner. A new one is extracted into a staging folder and renamed into place in one step, so
    a failed extraction, or two sessions saving the same zip at once, leave one whole dataset or none.
    ``progress(done, total)`` is called while extracting and while checking the images.

    Raises:
        UserError: the zip cannot be used (see core.dataset.load_dataset), or it is larger than the disk budget.
        WorkspaceError: the workspace database cannot be written.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path.name} does not exist or is not a file; give a .zip file.")
    # A name the user typed is checked before minutes of extraction; a file's name is only shortened.
    name = _clean_name(name) if name is not None else " ".join(path.name.split())[:MAX_NAME]
    dataset_id = zip_id(path)
    folder = datasets_dir() / dataset_id
    created = False
    if not (folder / RECORD_FILE).is_file():
        room = _plan(declared_bytes(path), owner)  # NoRoom before a byte is extracted
        limits = limits or Limits()
        limits = replace(limits, max_total_bytes=min(limits.max_total_bytes, room.allowed))  # and while streaming
        created = _extract(path, dataset_id, name, owner, progress, limits)
    try:
        _touch(folder, _read_record(folder))
    except FileNotFoundError:  # deleted by someone else in the instant since: as if the upload had failed
        raise _unknown(dataset_id) from None
    saved = _require(dataset_id)
    if created:
        removed = fit_budget(keep=dataset_id, owner=owner)
        saved = replace(saved, removed=tuple(r.name for r in removed))
    return saved


def _extract(path: Path, dataset_id: str, name: str, owner: str, progress, limits) -> bool:
    """Extract and ingest into a staging folder, then rename it to the dataset's folder; False if another won."""
    root = datasets_dir()
    root.mkdir(parents=True, exist_ok=True)
    # Inside the datasets folder, so the final rename stays on one file system and is atomic.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        ds = load_dataset(path, staging, limits, progress)
        _keep_only_images(ds)
        ds.root.rename(staging / FILES)
        write_json(staging / DATASET_FILE, _dataset_json(ds, dataset_id))
        record = {
            "format": FORMAT, "version": VERSION, "id": dataset_id, "name": name,
            "source": ds.report.source, "classes": len(ds.classes), "images": len(ds.items),
            "bytes": 0, "added": time.time(), "added_by": owner,
        }  # fmt: skip
        record["bytes"] = _folder_bytes(staging)
        _plan(record["bytes"], owner, keep=dataset_id)  # the real size, in case another upload took the room
        write_json(staging / RECORD_FILE, record)
        try:
            os.rename(staging, root / dataset_id)
        except OSError:
            if (root / dataset_id / RECORD_FILE).is_file():
                return False  # the same zip, saved by another session a moment earlier: use that one
            raise
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename


def _keep_only_images(ds: Dataset) -> None:
    """Remove every extracted file that is not one of the dataset's images (the report still lists the skipped
    ones and why), so a zip padded with other files costs the server nothing."""
    keep = {os.path.normpath(ds.root / it.path) for it in ds.items}
    for dirpath, _, filenames in os.walk(ds.root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.normpath(path) not in keep:
                os.unlink(path)


def _dataset_json(ds: Dataset, dataset_id: str) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "id": dataset_id,
        "root": FILES,  # relative, so the workspace can move
        "classes": ds.classes,
        "items": [[it.path, it.label, it.split] for it in ds.items],  # lists, not dicts: a third of the size
        "report": ds.report.to_dict(),
    }


def _clean_name(name: str) -> str:
    name = names.check(" ".join(str(name).split()), "The dataset name")  # line breaks became spaces
    if not name:
        raise UserError("A dataset needs a name; type one.")
    if len(name) > MAX_NAME:
        raise UserError(f"A dataset's name can have at most {MAX_NAME} characters (this one has {len(name)}).")
    return name


# ---------------------------------------------------------------------------------------------- reading


def open_dataset(dataset_id: str, touch: bool = True) -> Dataset:
    """The saved dataset, read from its dataset.json, marked as used now (``touch=False``: read only; a job on
    another machine, which never opens the workspace database).

    Raises:
        UnknownDataset: no saved dataset has this id (or the id is not plain hex).
        UserError: its files are damaged.
    """
    folder = _folder(dataset_id)
    try:
        record = _read_record(folder)
        data = read_json(folder / DATASET_FILE)
        root = (folder / data["root"]).resolve()
        if not root.is_relative_to(folder.resolve()):
            raise ValueError("root outside the dataset folder")
        report_fields = {f.name for f in fields(Report)}
        report = Report(**{k: v for k, v in data["report"].items() if k in report_fields})
        items = [Item(p, int(label), split) for p, label, split in data["items"]]
    except FileNotFoundError:
        raise _unknown(dataset_id) from None  # deleted while being opened
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"The saved dataset {dataset_id} is damaged (its {DATASET_FILE} cannot be read); delete it and upload "
            "the zip again."
        ) from None
    if touch:
        _touch(folder, record)
    classes = list(data["classes"])
    return Dataset(root=root, classes=classes, items=items, report=report, id=dataset_id, name=record["name"])


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
    return _saved(row) if row is not None else None


def list_datasets() -> list[SavedDataset]:
    """Every saved dataset, most recently used first."""
    query = "SELECT * FROM datasets ORDER BY last_used DESC, id"
    with db.connect() as con:
        rows = con.execute(query).fetchall()
    if {r["id"] for r in rows} != _ids_on_disk():
        sync()
        with db.connect() as con:
            rows = con.execute(query).fetchall()
    return [_saved(r) for r in rows]


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
                record = _read_record(folder)
                found[folder.name] = (record, max(float(record["added"]), folder.stat().st_mtime))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a complete dataset folder: leave it alone, and unlisted
    with db.connect(write=True) as con:
        known = {r["id"] for r in con.execute("SELECT id FROM datasets")}
        for gone in known - found.keys():
            con.execute("DELETE FROM datasets WHERE id = ?", (gone,))
        for new in found.keys() - known:
            record, last_used = found[new]
            _insert(con, record, last_used)


def runs_using(dataset_id: str) -> list[str]:
    """Ids of the saved runs trained on the dataset (from their run.json markers, the source of truth)."""
    return [r["id"] for r in list_runs() if dataset_id and r.get("dataset_id") == dataset_id]


# ---------------------------------------------------------------------------------------------- changing


def _require(dataset_id: str) -> SavedDataset:
    saved = get(dataset_id)
    if saved is None:
        raise _unknown(str(dataset_id))
    return saved


def rename(dataset_id: str, name: str, user: str) -> SavedDataset:
    """Give the dataset a new name (its owner or an admin; anyone for what a guest saved)."""
    saved = _require(dataset_id)
    access.check(user, saved.added_by, f"rename the dataset {saved.name}")
    name = _clean_name(name)
    folder = datasets_dir() / dataset_id
    try:
        record = _read_record(folder)
        write_json(folder / RECORD_FILE, {**record, "name": name})  # the folder keeps the name if the db is lost
    except FileNotFoundError:
        raise _unknown(dataset_id) from None
    with db.connect(write=True) as con:
        con.execute("UPDATE datasets SET name = ? WHERE id = ?", (name, dataset_id))
    return _require(dataset_id)


def delete(dataset_id: str, user: str, force: bool = False) -> SavedDataset:
    """Delete the saved dataset's files and record; return what was deleted.

    Raises:
        UnknownDataset: no such dataset.
        NotAllowed: ``user`` is neither its owner nor an admin.
        Busy: a queued or running job uses it.
        InUse: saved runs were trained on it and ``force`` is False.
    """
    saved = _require(dataset_id)
    access.check(user, saved.added_by, f"delete the dataset {saved.name}")
    with db.connect() as con:
        if con.execute(ACTIVE_JOB, (dataset_id,)).fetchone():
            raise _busy(saved)
    used = runs_using(dataset_id)
    if used and not force:
        raise InUse(_in_use_sentence(saved.name, len(used)), used)
    _remove(saved)
    return saved


def deletion_warning(dataset_id: str) -> str | None:
    """What deleting the dataset would cost the saved runs trained on it (InUse's sentence), or None."""
    saved = get(dataset_id)
    used = runs_using(dataset_id) if saved else []
    return _in_use_sentence(saved.name, len(used)) if used else None


def _in_use_sentence(name: str, n: int) -> str:
    one = n == 1
    return (
        f"{n} saved run{'' if one else 's'} {'was' if one else 'were'} trained on the dataset {name}: "
        f"{'it keeps' if one else 'they keep'} working for Classify, but evaluating {'it' if one else 'them'} "
        "on this dataset, the learning-rate finder and training again would need the zip uploaded again."
    )


def _busy(saved: SavedDataset) -> Busy:
    return Busy(
        f"A queued or running job uses the dataset {saved.name}; stop it or let it finish, then delete the dataset."
    )


def _remove(saved: SavedDataset) -> None:
    folder = datasets_dir() / saved.id
    trash = datasets_dir() / f".trash-{saved.id}-{secrets.token_hex(4)}"
    # One write transaction: a job cannot be queued on the dataset between the check and the removal, and the
    # folder leaves its place in one rename, so nobody opens half a dataset.
    with db.connect(write=True) as con:
        if con.execute(ACTIVE_JOB, (saved.id,)).fetchone():
            raise _busy(saved)
        con.execute("DELETE FROM datasets WHERE id = ?", (saved.id,))
        try:
            folder.rename(trash)
        except FileNotFoundError:
            return  # removed by someone else already
    shutil.rmtree(trash, ignore_errors=True)


def fit_budget(keep: str = "", owner: str = access.GUEST) -> list[SavedDataset]:
    """Remove the least recently used datasets ``owner`` may lose (their own and guests') until all fit in the disk
    budget; return what was removed.

    Never removes ``keep`` (the dataset just saved), another signed-in user's, nor one that a queued or running job
    uses.
    """
    limit = budget_bytes()
    rows = _rows()
    total = sum(r.bytes for r in rows)
    removed = []
    for saved in rows:
        if total <= limit:
            break
        if saved.id == keep or not _may_lose(owner, saved):
            continue
        try:
            _remove(saved)
        except Busy:
            continue
        total -= saved.bytes
        removed.append(saved)
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(saved.last_used))
        log.warning(
            "removed the saved dataset %s (%s, %s, last used %s) to keep saved datasets within %s (%s)",
            saved.name, saved.id, human_size(saved.bytes), used, human_size(limit), BUDGET_ENV,
        )  # fmt: skip
    return removed


# ---------------------------------------------------------------------------------------------- space


@dataclass(frozen=True)
class SavePlan:
    """What saving a zip takes: its size, the room it may use while extracting, and what it would remove."""

    bytes: int  # what the zip unpacks to, by its headers (the images kept are at most this)
    allowed: int  # the most bytes extraction may write: the quota's and the budget's room, after the removals
    removes: tuple[SavedDataset, ...] = ()  # least recently used first
    saved: SavedDataset | None = None  # the zip was saved before: nothing to extract, nothing removed


def declared_bytes(path: str | os.PathLike) -> int:
    """What the zip's headers say its files unpack to (read without extracting anything)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(info.file_size for info in zf.infolist() if not info.is_dir())
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        raise UserError(f"{Path(path).name} is not a zip file or cannot be read.") from None


def plan_save(path: str | os.PathLike, owner: str = access.GUEST) -> SavePlan:
    """What ``save_zip(path, owner=owner)`` would take and remove, decided now and without extracting: a page
    shows the removals before it saves.

    Raises:
        NoRoom: over the owner's quota, or more than the budget with what they may remove.
        UserError: not a readable zip.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path.name} does not exist or is not a file; give a .zip file.")
    found = get(zip_id(path))
    if found is not None:
        return SavePlan(found.bytes, 0, (), found)
    return _plan(declared_bytes(path), owner)


def _rows() -> list[SavedDataset]:
    with db.connect() as con:
        return [_saved(r) for r in con.execute("SELECT * FROM datasets ORDER BY last_used, id")]


def _mine(owner: str, added_by: str) -> bool:
    return owner == added_by or access.same_user(owner, added_by)


def _may_lose(owner: str, saved: SavedDataset) -> bool:
    """Whether an upload by ``owner`` may push ``saved`` out of the budget: only their own, or a guest's."""
    return saved.added_by == access.GUEST or _mine(owner, saved.added_by)


def _plan(need: int, owner: str, keep: str = "") -> SavePlan:
    rows = [r for r in _rows() if r.id != keep]
    quota, budget = quota_bytes(), budget_bytes()
    used = sum(r.bytes for r in rows if _mine(owner, r.added_by))
    whose = "your saved datasets take" if owner else "the datasets saved without sign-in take"
    if used + need > quota:
        raise NoRoom(
            f"This dataset unpacks to {human_size(need)}, and {whose} {human_size(used)} of the "
            f"{human_size(quota)} each person may keep ({QUOTA_ENV}): delete datasets you no longer need "
            "on the Dataset page, or ask an admin for a larger quota."
        )
    with db.connect() as con:
        busy = {r.id for r in rows if con.execute(ACTIVE_JOB, (r.id,)).fetchone()}
    total, removes = sum(r.bytes for r in rows), []
    for r in rows:
        if total + need <= budget:
            break
        if r.id not in busy and _may_lose(owner, r):
            removes.append(r)
            total -= r.bytes
    if total + need > budget:
        raise NoRoom(
            f"This dataset unpacks to {human_size(need)}, and the space this server keeps for saved datasets "
            f"({human_size(budget)}, {BUDGET_ENV}) is taken by other people's datasets and running jobs: ask an "
            "admin to make room."
        )
    return SavePlan(need, min(quota - used, budget - total), tuple(removes))
