"""Saved datasets: every uploaded zip is kept once on the server, keyed by its content, and found again by its id.

    saved = save_zip("ants.zip", owner="a@x.org", progress=bar)  # extracted once; the same zip again is instant
    ds = open_dataset(saved.id)         # the ingested Dataset from dataset.json: no folder scan, no image decoded
    ds = open_dataset(saved.id, version=1)  # as it was at version 1 (core.workspace.versions); ds.version
    list_datasets()                     # most recently used first
    rename(saved.id, "Ants v2", user); delete(saved.id, user, force=False); runs_using(saved.id)

In the workspace (``$CLASSIFIER_WORK_DIR``, default ``./work``)::

    datasets/<id>/
        files/          the zip's content, extracted by core.data.dataset's safe extraction
        dataset.json    the ingested Dataset: classes, items and report, paths relative to files/
        versions/       its versions, immutable manifests of (content hash, class, split): core.workspace.manifests
        record.json     name, source, added, added_by, counts and size: enough to rebuild the database row
    datasets/.staging-*/    an extraction under way; renamed to <id>/ in one step once complete
    datasets/.trash-*/      a dataset being deleted

The id is the first 16 hex digits of the zip file's sha256 (64 bits: a collision between two different zips on one
server is not a practical worry), so uploading the same zip twice, from any session, gives one dataset. The folders
are the source of truth; the ``datasets`` table of the workspace database (core.workspace.db) indexes them for listing
and remembers when each was last used. ``sync()`` rebuilds that table from the folders when the database was lost.

Where a dataset's bytes may go, and what an upload removes to make room: ``core.workspace.space``.
Ids, records and listing: ``core.workspace.records``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

from core.data.dataset import Dataset, Item, Report, count_warnings, load_dataset
from core.data.zips import Limits, Progress
from core.util import names
from core.util.errors import UserError
from core.workspace import access, db, manifests
from core.workspace.records import (
    ACTIVE_JOB,
    DATASET_FILE,
    FILES,
    FORMAT,
    RECORD_FILE,
    VERSION,
    SavedDataset,
    busy,
    datasets_dir,
    folder_bytes,
    folder_of,
    get,
    mark_used,
    read_record,
    remove,
    runs_using,
    unknown,
    zip_id,
)  # fmt: skip
from core.workspace.runs import read_json, write_json
from core.workspace.space import declared_bytes, fit_budget, plan_room

log = logging.getLogger(__name__)
MAX_NAME = 100


class InUse(UserError):
    """Saved runs were trained on the dataset; ``delete(..., force=True)`` deletes it all the same."""

    def __init__(self, message: str, runs: list[str]):
        super().__init__(message)
        self.runs = runs


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
        UserError: the zip cannot be used (see core.data.dataset.load_dataset), or it is larger than the disk budget.
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
        room = plan_room(declared_bytes(path), owner)  # NoRoom before a byte is extracted
        limits = limits or Limits()
        limits = replace(limits, max_total_bytes=min(limits.max_total_bytes, room.allowed))  # and while streaming
        created = _extract(path, dataset_id, name, owner, progress, limits)
    try:
        mark_used(folder, read_record(folder))
    except FileNotFoundError:  # deleted by someone else in the instant since: as if the upload had failed
        raise unknown(dataset_id) from None
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
        manifests.write_first(staging, record, progress)  # version 1: every image hashed once, now
        record["bytes"] = folder_bytes(staging)
        plan_room(record["bytes"], owner, keep=dataset_id)  # the real size, in case another upload took the room
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
    keep = {os.path.normpath(ds.root / path) for path in [*(it.path for it in ds.items), *ds.other]}
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
        "other": ds.other,  # the __other__ folder's images: no class, kept for checking "none of these"
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


def open_dataset(
    dataset_id: str, touch: bool = True, version: int | None = None, progress: Progress | None = None
) -> Dataset:
    """The saved dataset at ``version`` (None: the newest; core.workspace.versions), read from its dataset.json and
    that version's manifest, marked as used now (``touch=False``: read only; a job on another machine, which never
    opens the workspace database). Each item carries its content hash (``Item.digest``).

    ``progress(done, total)``: while a dataset saved before versions existed has its images hashed, once.

    Raises:
        UnknownDataset: no saved dataset has this id (or the id is not plain hex).
        UnknownVersion: it has no such version.
        UserError: its files are damaged.
    """
    folder = folder_of(dataset_id)
    try:
        record = read_record(folder)
        data = read_json(folder / DATASET_FILE)
        root = (folder / data["root"]).resolve()
        if not root.is_relative_to(folder.resolve()):
            raise ValueError("root outside the dataset folder")
        report_fields = {f.name for f in fields(Report)}
        report = Report(**{k: v for k, v in data["report"].items() if k in report_fields})
        classes = [str(c) for c in data["classes"]]
        other = [str(p) for p in data.get("other") or []]  # none in a dataset saved before they were kept
    except FileNotFoundError:
        raise unknown(dataset_id) from None  # deleted while being opened
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"The saved dataset {dataset_id} is damaged (its {DATASET_FILE} cannot be read); delete it and upload "
            "the zip again."
        ) from None
    at = manifests.get(dataset_id, version, progress=progress)
    if touch:
        mark_used(folder, record)
    classes, items, report = _at_version(at, classes, report)
    return Dataset(
        root=root, classes=classes, items=items, report=report, id=dataset_id, name=record["name"],
        store=str(folder), version=at.number, other=other,
    )  # fmt: skip


def _at_version(at: manifests.Version, saved: list[str], report: Report) -> tuple[list[str], list[Item], Report]:
    """The classes, items and report of a version: the saved classes keep their order (a run's class indices),
    classes a version added follow; a class with fewer than 2 images is left out with a warning."""
    counts = at.counts
    usable = {c for c, n in counts.items() if n >= 2}
    classes = [c for c in saved if c in usable] + sorted(usable - set(saved), key=manifests.class_order)
    index = {c: i for i, c in enumerate(classes)}
    items = [Item(e.path, index[e.label], e.split, e.hash) for e in at.entries if e.label in index]
    if at.number == 1 and classes == saved:
        return classes, items, report  # as ingestion found it
    per_split: dict[str, dict[str, int]] = {c: {} for c in classes}
    for it in items:
        key = it.split or ("added" if report.layout == "split" else "all")
        per_split[classes[it.label]][key] = per_split[classes[it.label]].get(key, 0) + 1
    kept = [w for w in report.warnings if not w.startswith(("Class '", "The classes are imbalanced"))]
    left_out = [
        f"Class '{c}' has only 1 usable image in version {at.number} and was left out: a class needs at least 2."
        for c in sorted(set(counts) - usable, key=manifests.class_order)
    ]
    totals = {c: sum(v.values()) for c, v in per_split.items()}
    report = replace(report, classes=classes, counts=per_split, warnings=left_out + count_warnings(totals) + kept)
    return classes, items, report


# ---------------------------------------------------------------------------------------------- changing


def _require(dataset_id: str) -> SavedDataset:
    saved = get(dataset_id)
    if saved is None:
        raise unknown(str(dataset_id))
    return saved


def rename(dataset_id: str, name: str, user: str) -> SavedDataset:
    """Give the dataset a new name (its owner or an admin; anyone for what a guest saved)."""
    saved = _require(dataset_id)
    access.check(user, saved.added_by, f"rename the dataset {saved.name}")
    name = _clean_name(name)
    folder = datasets_dir() / dataset_id
    try:
        record = read_record(folder)
        write_json(folder / RECORD_FILE, {**record, "name": name})  # the folder keeps the name if the db is lost
    except FileNotFoundError:
        raise unknown(dataset_id) from None
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
            raise busy(saved)
    used = runs_using(dataset_id)
    if used and not force:
        raise InUse(_in_use_sentence(saved.name, len(used)), used)
    remove(saved)
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


# ---------------------------------------------------------------------------------------------- space
