"""Where saved datasets' bytes may go: each person's quota, the server's budget, and what an upload removes.

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

import logging
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core import settings
from core.util.errors import UserError
from core.util.text import human_size
from core.workspace import access, db
from core.workspace.records import (
    ACTIVE_JOB,
    Busy,
    SavedDataset,
    all_rows,
    get,
    remove,
    zip_id,
)  # fmt: skip

log = logging.getLogger(__name__)


class NoRoom(UserError):
    """Saving the dataset would go over the uploader's quota, or over the disk budget with nothing they may remove."""


def budget_bytes() -> int:
    """The disk space all saved datasets share ($CLASSIFIER_DATASETS_MB)."""
    return settings.current().megabytes("datasets_mb")


def quota_bytes() -> int:
    """The disk space one person's saved datasets may take ($CLASSIFIER_QUOTA_MB; guests share one)."""
    return settings.current().megabytes("quota_mb")


def fit_budget(keep: str = "", owner: str = access.GUEST) -> list[SavedDataset]:
    """Remove the least recently used datasets ``owner`` may lose (their own and guests') until all fit in the disk
    budget; return what was removed.

    Never removes ``keep`` (the dataset just saved), another signed-in user's, nor one that a queued or running job
    uses.
    """
    limit = budget_bytes()
    rows = all_rows()
    total = sum(r.bytes for r in rows)
    removed = []
    for saved in rows:
        if total <= limit:
            break
        if saved.id == keep or not _may_lose(owner, saved):
            continue
        try:
            remove(saved)
        except Busy:
            continue
        total -= saved.bytes
        removed.append(saved)
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(saved.last_used))
        log.warning(
            "removed the saved dataset %s (%s, %s, last used %s) to keep saved datasets within %s (%s)",
            saved.name, saved.id, human_size(saved.bytes), used, human_size(limit), "CLASSIFIER_DATASETS_MB",
        )  # fmt: skip
    return removed


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
    return plan_room(declared_bytes(path), owner)


def _mine(owner: str, added_by: str) -> bool:
    return owner == added_by or access.same_user(owner, added_by)


def _may_lose(owner: str, saved: SavedDataset) -> bool:
    """Whether an upload by ``owner`` may push ``saved`` out of the budget: only their own, or a guest's."""
    return saved.added_by == access.GUEST or _mine(owner, saved.added_by)


def plan_room(need: int, owner: str, keep: str = "") -> SavePlan:
    rows = [r for r in all_rows() if r.id != keep]
    quota, budget = quota_bytes(), budget_bytes()
    used = sum(r.bytes for r in rows if _mine(owner, r.added_by))
    whose = "your saved datasets take" if owner else "the datasets saved without sign-in take"
    if used + need > quota:
        raise NoRoom(
            f"This dataset unpacks to {human_size(need)}, and {whose} {human_size(used)} of the "
            f"{human_size(quota)} each person may keep (CLASSIFIER_QUOTA_MB): delete datasets you no longer need "
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
            f"({human_size(budget)}, CLASSIFIER_DATASETS_MB) is taken by other people's datasets and running jobs: "
            "ask an admin to make room."
        )
    return SavePlan(need, min(quota - used, budget - total), tuple(removes))
