"""How a saved dataset's versions are stored and read: the manifests, their cache, version 1.

The public face is ``core.workspace.versions`` (which re-exports what is read here); this module holds the layout::

    datasets/<id>/
        files/                  the zip's images, where ingestion put them (version 1's paths)
        files/.added/<hash>.jpg an image added by a commit: stored once by content hash, in a dot-folder that the
                                junk filters of a rescan skip
        versions/<n>.json       version n: number, parent, message, author, created, entries [[hash, path, label,
                                split], ...]; written once (atomically, under ``versions.lock``) and never changed
        versions.lock           the file lock that serialises making version 1 and committing

Version 1 is the dataset as saved: every image of ``dataset.json``, hashed (sha256 of the file's bytes, streamed)
once — when the zip is saved (``write_first`` on the staging folder), or on first use for a dataset saved before
versions existed (``ensure_first``, under the lock: one process hashes, the others wait and read its manifest).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.data.zips import Progress
from core.util.errors import UserError
from core.util.files import locked, read_json, write_json
from core.workspace import records

VERSIONS = "versions"  # in the dataset's folder
ADDED = ".added"  # in the dataset's files/: a dot-folder, skipped by every junk filter
MANIFEST_FORMAT = "vgg16-classifier-dataset-version"


class UnknownVersion(UserError):
    """The dataset has no version with this number."""


@dataclass(frozen=True)
class Entry:
    hash: str  # sha256 hex of the image file's bytes
    path: str  # relative to the Dataset's root (POSIX), where the file is
    label: str  # class name
    split: str  # "train" | "val" | "test" | "" (as the zip's own layout gave it; "" = assigned by hash at training)


@dataclass(frozen=True)
class Version:
    number: int
    parent: int | None
    message: str
    author: str  # a user key (core.workspace.access); "" for a guest
    created: float  # seconds since the epoch
    entries: tuple[Entry, ...]

    @property
    def classes(self) -> list[str]:
        """The class names of this version, sorted as a dataset lists them (case-insensitively, then by case)."""
        return sorted({e.label for e in self.entries}, key=class_order)

    @property
    def counts(self) -> dict[str, int]:
        """Images per class."""
        counted = Counter(e.label for e in self.entries)
        return {c: counted[c] for c in self.classes}

    @property
    def hashes(self) -> set[str]:
        return {e.hash for e in self.entries}


def class_order(name: str) -> tuple[str, str]:
    return name.lower(), name


# ---------------------------------------------------------------------------------------------- reading


def folder_of(dataset_id: str) -> Path:
    return records.folder_of(dataset_id)  # UnknownDataset for an id that is not a saved dataset


def manifest_path(folder: Path, number: int) -> Path:
    return folder / VERSIONS / f"{number}.json"


def numbers(folder: Path) -> list[int]:
    try:
        found = [p.stem for p in (folder / VERSIONS).iterdir() if p.suffix == ".json"]
    except FileNotFoundError:
        return []
    return sorted(int(s) for s in found if s.isascii() and s.isdigit() and not s.startswith("0"))


_CACHE: dict[str, tuple[tuple[int, int], Version]] = {}  # manifests never change: each is parsed once per process


def read(folder: Path, number: int) -> Version:
    path = manifest_path(folder, number)
    try:
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        cached = _CACHE.get(str(path))
        if cached and cached[0] == key:
            return cached[1]
        data = read_json(path)
        if data.get("format") != MANIFEST_FORMAT or int(data["number"]) != number:
            raise ValueError("not a version manifest")
        entries = tuple(Entry(str(h), str(p), str(c), str(s)) for h, p, c, s in data["entries"])
        parent = data.get("parent")
        version = Version(number, None if parent is None else int(parent), str(data.get("message", "")),
                          str(data.get("author", "")), float(data.get("created", 0)), entries)  # fmt: skip
    except FileNotFoundError:
        raise unknown_version(folder.name, number, numbers(folder)) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(
            f"Version {number} of the saved dataset {folder.name} is damaged (its {VERSIONS}/{number}.json cannot "
            "be read); delete the dataset and upload the zip again."
        ) from None
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[str(path)] = (key, version)
    return version


def unknown_version(dataset_id: str, number, known: list[int]) -> UnknownVersion:
    have = f"versions 1 to {known[-1]}" if len(known) > 1 else "only version 1"
    return UnknownVersion(f"The dataset {dataset_id} has no version {number}; it has {have}.")


def versions(dataset_id: str, *, progress: Progress | None = None) -> list[Version]:
    """Every version of the saved dataset, oldest first (version 1 made now if the dataset has none yet;
    ``progress(done, total)`` while its images are hashed)."""
    folder = folder_of(dataset_id)
    return [read(folder, n) for n in ensure_first(folder, progress)]


def get(dataset_id: str, number: int | None = None, *, progress: Progress | None = None) -> Version:
    """Version ``number`` of the saved dataset (None: the newest).

    Raises:
        UnknownDataset: no saved dataset has this id.
        UnknownVersion: it has no such version.
    """
    folder = folder_of(dataset_id)
    known = ensure_first(folder, progress)
    if number is None:
        return read(folder, known[-1])
    if isinstance(number, bool) or not isinstance(number, int) or number not in known:
        raise unknown_version(dataset_id, number, known)
    return read(folder, number)


def newest(dataset_id: str, *, progress: Progress | None = None) -> Version:
    return get(dataset_id, None, progress=progress)


def latest_number(dataset_id: str) -> int:
    """The newest version's number, from the folder's listing alone (no manifest read): 0 before version 1 is made,
    or for an id that is not a saved dataset. Cheap enough for every page run."""
    if not records.is_id(dataset_id):
        return 0
    found = numbers(records.datasets_dir() / dataset_id)
    return found[-1] if found else 0


def parse_version(text: str) -> int | None:
    """``"latest"`` -> None (the newest), ``"3"`` or ``"v3"`` -> 3; UserError otherwise."""
    text = str(text).strip().lower()
    if text in ("latest", "newest"):
        return None
    digits = text[1:] if text.startswith("v") else text
    if digits.isascii() and digits.isdigit() and len(digits) < 10 and int(digits) > 0:
        return int(digits)
    raise UnknownVersion(f"'{text[:40]}' is not a version: write @latest or a version number such as @3.")


# ---------------------------------------------------------------------------------------------- version 1


@contextlib.contextmanager
def lock(folder: Path) -> Iterator[None]:
    with locked(folder / VERSIONS):  # versions.lock, beside the folder
        yield


def ensure_first(folder: Path, progress: Progress | None) -> list[int]:
    known = numbers(folder)
    if known:
        return known
    with lock(folder):  # one process hashes; any other waits for it and then reads its manifest
        if not numbers(folder):
            record = records.read_record(folder)
            write_first(folder, record, progress)
    return numbers(folder)


def write_first(folder: Path, record: dict, progress: Progress | None = None) -> None:
    """Write version 1 of the dataset in ``folder`` from its dataset.json (also a staging folder, as a zip is
    saved): every image's bytes streamed through sha256, nothing held in memory."""
    try:
        data = read_json(folder / records.DATASET_FILE)
        root = folder / data["root"]
        classes = list(data["classes"])
        items = [(str(p), classes[int(c)], str(s)) for p, c, s in data["items"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        raise UserError(
            f"The saved dataset {folder.name} is damaged (its {records.DATASET_FILE} cannot be read); delete it and "
            "upload the zip again."
        ) from None
    entries = []
    for i, (path, label, split) in enumerate(items, start=1):
        try:
            with open(root / path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            raise UserError(
                f"The saved dataset {folder.name} is damaged ({path} is missing); delete it and upload the zip again."
            ) from None
        entries.append([digest, path, label, split])
        if progress:
            progress(i, len(items))
    source = record.get("source") or "the zip"
    write_manifest(folder, 1, None, f"Saved from {source}", str(record.get("added_by") or ""),
                   float(record.get("added") or time.time()), entries)  # fmt: skip


def write_manifest(folder, number, parent, message, author, created, entries) -> None:
    (folder / VERSIONS).mkdir(exist_ok=True)
    path = manifest_path(folder, number)
    tmp = path.with_name(f".{number}.json.new")
    write_json(tmp, {"format": MANIFEST_FORMAT, "number": number, "parent": parent, "message": message,
                     "author": author, "created": created, "entries": entries})  # fmt: skip
    try:
        os.link(tmp, path)  # never replaces a version: an existing n.json makes this fail
    finally:
        tmp.unlink()
