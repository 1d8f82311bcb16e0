"""The rows of the review queues (core.workspace.review): ``Item``, its states and sources, and the checks every
change of them makes (the dataset exists, the user may change it, a class name is usable, an image is one).

A row of the workspace database's ``review_items`` is one image of one dataset: kind ``new`` (an image to add, kept
in ``datasets/<id>/review/``) or ``suspect`` (an image of the dataset whose label is in doubt,
core.workspace.suspects); ``review_log`` holds what each decision changed, for undo.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath

from core import settings
from core.imaging.pillow import open_image
from core.util import names
from core.util.errors import UserError
from core.workspace import access, db, records
from core.workspace.records import SavedDataset

SOURCES = ("api", "classify", "demo", "upload")
SUSPECT = "suspect"  # the source of a suspected label error's row (core.workspace.suspects)
NEW, SUSPECTS = "new", "suspect"  # kinds of row: an image to add, a dataset image whose label is in doubt
QUEUED, LABELLED, DISCARDED, COMMITTED = "queued", "labelled", "discarded", "committed"
STATES = (QUEUED, LABELLED, DISCARDED, COMMITTED)
FOLDER = "review"  # in the dataset's folder, beside files/: never part of a version until committed
MAX_NAME = 100
MAX_CLASS = 100
MAX_TOP = 10
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
               "TIFF": ".tif"}  # fmt: skip


class QueueFull(UserError):
    """The dataset's review queue holds as many items as it may: the new one was not kept."""


@dataclass(frozen=True)
class Item:
    id: str
    dataset_id: str
    run_id: str
    hash: str  # sha256 hex of the image's bytes
    name: str  # the file's name as sent (a suspect's path within the dataset)
    source: str  # "api" | "classify" | "demo" | "upload" | "suspect"
    key_id: str  # the API key that sent it, "" otherwise
    top: list[tuple[str, float]]  # the run's best classes, most likely first
    not_sure: bool
    none_of_these: bool | None  # None: the run cannot say
    added: float
    added_by: str  # the user who sent it ("" for a guest, or a key)
    state: str  # "queued" | "labelled" | "discarded" | "committed"
    label: str | None
    decided_by: str
    decided_at: float | None
    ext: str = ""  # of the stored file
    version: int | None = None  # the dataset version whose commit closed it; None while open

    @property
    def margin(self) -> float:
        """The best class's probability minus the second's: small when the run hesitated (1 without answers)."""
        if not self.top:
            return 1.0
        return float(self.top[0][1]) - (float(self.top[1][1]) if len(self.top) > 1 else 0.0)

    @property
    def priority(self) -> tuple:
        """Sort key, most informative first: "none of these", then "not sure", then the smallest margin."""
        return (self.none_of_these is not True, not self.not_sure, self.margin, self.added, self.id)


def cap() -> int:
    """How many items one dataset's queue may hold (``CLASSIFIER_REVIEW_CAP``)."""
    return settings.current().review_cap


# ---------------------------------------------------------------------------------------------- checks


def saved_dataset(dataset_id: str) -> SavedDataset:
    """The saved dataset's record; UnknownDataset (a sentence) for an id that names none."""
    records.folder_of(dataset_id)
    saved = records.get(dataset_id)
    if saved is None:
        raise records.unknown(str(dataset_id))
    return saved


def check_change(user: str, saved: SavedDataset) -> None:
    access.check(user, saved.added_by, f"label the images of the dataset {saved.name}")


def may_label(user: str, dataset_id: str) -> bool:
    """Whether ``user`` may decide on the dataset's queue (to show or grey out the keys)."""
    saved = records.get(dataset_id)
    return saved is not None and access.may_change(user, saved.added_by)


def check_label(label: object) -> str:
    """A class name as typed (spaces around it dropped), or UserError with what is wrong with it."""
    if not isinstance(label, str) or not label.strip():
        raise UserError("A class needs a name; type one.")
    label = names.check(label.strip(), "The class name")
    if len(label) > MAX_CLASS or any(ch in label for ch in "/\\"):
        raise UserError(f"The class name '{label[:60]}' cannot be used: at most {MAX_CLASS} characters, no / or \\.")
    return label


def image_ext(data: object, name: str) -> str:
    """The stored file's extension; UserError (nothing is kept) when ``data`` is not a usable image."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise UserError(f"{name} is empty; it was not kept for review.")
    try:
        with open_image(bytes(data)) as im:
            ext = _EXTENSIONS[im.format]
            im.draft("RGB", (64, 64))
            im.load()
    except UserError as exc:
        raise UserError(f"{name} is not a usable image ({exc}); it was not kept for review.") from None
    except Exception as exc:  # any decoder failure is a damaged file
        raise UserError(f"{name} is not a usable image (damaged: {exc}); it was not kept for review.") from None
    return ext


def plain_name(name: object, ext: str) -> str:
    """A plain file name (no folders, no control characters) for what a user or a program called the image."""
    base = PurePosixPath(str(name or "").replace("\\", "/")).name
    base = "".join("_" if names.problem(ch) else ch for ch in base).strip()[:MAX_NAME]
    return base if base not in ("", ".", "..") else f"image{ext}"


# ---------------------------------------------------------------------------------------------- rows


def to_item(row: sqlite3.Row) -> Item:
    data = {f.name: row[f.name] for f in fields(Item)}
    nothing = row["none_of_these"] is None
    data.update(top=[(str(c), float(p)) for c, p in json.loads(row["top"])], not_sure=bool(row["not_sure"]),
                none_of_these=None if nothing else bool(row["none_of_these"]))  # fmt: skip
    return Item(**data)


def row_of(con: sqlite3.Connection, item_id: str) -> sqlite3.Row | None:
    return con.execute("SELECT * FROM review_items WHERE id = ?", (item_id,)).fetchone()


def unknown_item(item_id: object) -> UserError:
    shown = str(item_id)[:40]
    return UserError(f"There is no review item {shown}: it went with its dataset, or the id is mistyped.")


def item(item_id: str) -> Item:
    """The item with this id; UserError for an id that names none."""
    with db.connect() as con:
        row = row_of(con, str(item_id))
    if row is None:
        raise unknown_item(item_id)
    return to_item(row)


def store(folder: Path, digest: str, ext: str, data: bytes) -> None:
    target = folder / FOLDER / f"{digest}{ext}"
    if target.is_file():
        return  # kept once by content
    tmp = target.with_name(f".{digest}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"The image could not be kept for review ({exc.strerror or exc}); try again later.") from None


def waiting(con: sqlite3.Connection, dataset_id: str) -> int:
    query = "SELECT count(*) FROM review_items WHERE dataset_id = ? AND kind = ? AND state IN (?, ?)"
    return con.execute(query, (dataset_id, NEW, QUEUED, LABELLED)).fetchone()[0]


def forget_stale(con: sqlite3.Connection, saved: SavedDataset) -> None:
    """Rows older than the dataset belong to a deleted dataset that was saved again under the same id."""
    con.execute("DELETE FROM review_items WHERE dataset_id = ? AND added < ?", (saved.id, saved.added))
    con.execute("DELETE FROM review_log WHERE dataset_id = ? AND item_id NOT IN (SELECT id FROM review_items)",
                (saved.id,))  # fmt: skip
