"""A saved dataset's versions: immutable manifests of (content hash, class, split) per image.

    versions(dataset_id)                  # oldest first; version 1 is made from dataset.json on first use
    v = get(dataset_id, 2); newest(dataset_id); v.classes, v.counts
    commit(dataset_id, user, "accept 3 reviewed photos", add=[(data, "IMG_1.jpg", "cats")], remove=[h],
           relabel={h2: "dogs"})          # a new version: the newest one + the change
    diff(dataset_id, 1, 2).summary()      # "v1 → v2: 3 added (cats 3), 1 relabelled (cats → dogs 1)"
    new_validation(dataset_id, 1, 2, 0.1) # validation images of version 2 that version 1 did not have
    latest_number(dataset_id)             # the newest number from the folder's listing: cheap, for every page run

A change never edits a version: it writes version n+1 from the newest one, serialised with a file lock so that two
commits at once land as n and n+1 (storage and version 1: ``core.workspace.manifests``). Images are stored once, by
content hash. An image keeps the split its zip gave it (``train``/``val``/``test``) in every version; one without
(``""``) is split by its hash at training (``core.data.dataset.split_dataset``), so it stays on its side too, and a
later version's validation accuracy is comparable with an earlier one's. Only the dataset's owner or an admin may
commit (anyone, for what a guest saved): ``core.workspace.access``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.data.dataset import validation_digests
from core.imaging.pillow import ImageError, open_image
from core.util import names
from core.util.errors import UserError
from core.util.files import write_json
from core.workspace import access, db, records
from core.workspace.manifests import (
    ADDED,
    Entry,
    UnknownVersion,
    Version,
    class_order,
    ensure_first,
    folder_of,
    get,
    latest_number,
    lock,
    newest,
    numbers,
    parse_version,
    read,
    versions,
    write_manifest,
)  # fmt: skip

__all__ = ["Diff", "Entry", "UnknownVersion", "Version", "commit", "diff", "get", "latest_number", "new_validation",
           "newest", "parse_version", "versions"]  # fmt: skip
MAX_MESSAGE = 200
MAX_CLASS = 100
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
               "TIFF": ".tif"}  # fmt: skip
# ---------------------------------------------------------------------------------------------- changing


@dataclass(frozen=True)
class _Image:
    data: bytes
    name: str
    label: str
    hash: str
    ext: str


def _check_class(label) -> str:
    if not isinstance(label, str) or not label.strip():
        raise UserError("A class needs a name; type one (nothing was changed).")
    names.check(label, "The class name")
    if label != label.strip() or len(label) > MAX_CLASS or any(ch in label for ch in "/\\"):
        raise UserError(
            f"The class name '{label.strip()[:60]}' cannot be used: at most {MAX_CLASS} characters, no / or \\, "
            "no spaces around it (nothing was changed)."
        )
    return label


def _check_image(data, name, label) -> _Image:
    name = str(name)
    if not name or name in (".", "..") or any(ch in name for ch in "/\\") or names.problem(name):
        shown = "".join("?" if names.problem(ch) else ch for ch in name)[:60]
        raise UserError(f"The file name '{shown}' is not a plain file name (no folders); nothing was changed.")
    label = _check_class(label)
    if not isinstance(data, bytes | bytearray) or not data:
        raise UserError(f"{name} is empty; nothing was changed.")
    data = bytes(data)
    try:
        with open_image(data) as im:
            ext = _EXTENSIONS[im.format]
            im.draft("RGB", (64, 64))
            im.load()
    except ImageError as exc:
        raise UserError(f"{name} is not a usable image ({exc}); nothing was changed.") from None
    except Exception as exc:  # any decoder failure is a damaged file
        raise UserError(f"{name} is not a usable image (damaged: {exc}); nothing was changed.") from None
    return _Image(data, name, label, hashlib.sha256(data).hexdigest(), ext)


def _check_message(message) -> str:
    message = " ".join(str(message or "").split())
    if len(message) > MAX_MESSAGE:
        raise UserError(f"A version's message can have at most {MAX_MESSAGE} characters (this one has {len(message)}).")
    return names.check(message, "The message")


def commit(
    dataset_id: str,
    user: str,
    message: str,
    *,
    add: Sequence[tuple[bytes, str, str]] = (),
    remove: Iterable[str] = (),
    relabel: Mapping[str, str] | None = None,
) -> Version:
    """Make the newest version + this change the dataset's new version, and return it.

    ``remove``: content hashes to leave out; ``relabel``: hash -> class name (a new name adds a class); ``add``:
    (image bytes, file name, class name) — stored once by hash under ``files/.added/``; an image already in the
    version is relabelled instead. Applied in that order. ``message``: one line (empty: one is written).

    Raises:
        UnknownDataset: no such saved dataset.
        NotAllowed: ``user`` may not change it (its owner or an admin; anyone, for a guest's).
        UserError: a bad image, file or class name, a hash the newest version does not hold, nothing changed, or a
            change that leaves fewer than 2 classes of 2 images. Nothing is written then.
    """
    folder = folder_of(dataset_id)
    record = records.read_record(folder)
    access.check(user, record.get("added_by", access.GUEST), f"change the dataset {record.get('name', dataset_id)}")
    message = _check_message(message)
    relabel = {str(h): _check_class(c) for h, c in (relabel or {}).items()}
    remove = {remove} if isinstance(remove, str) else {str(h) for h in remove}  # one hash, or many
    images = [_check_image(*a) for a in add]
    ensure_first(folder, None)
    with lock(folder):
        base = read(folder, numbers(folder)[-1])
        entries = _apply(base, remove, relabel, images, _known_paths(folder))
        _check_result(base, entries, dataset_id)
        stored = {e.hash for e in entries if e.path.startswith(f"{ADDED}/")}
        for image in images:
            if image.hash in stored:
                _store(folder / records.FILES, image)
        number = base.number + 1
        message = message or _describe(base, entries)
        write_manifest(folder, number, base.number, message, str(user or ""), time.time(),
                       [[e.hash, e.path, e.label, e.split] for e in entries])  # fmt: skip
        _update_record(folder, record, entries)
        return read(folder, number)


def _known_paths(folder: Path) -> dict[str, Entry]:
    """Version 1's entry of each hash: an image removed and added again gets its old file and split back."""
    return {e.hash: e for e in read(folder, 1).entries}


def _apply(base: Version, remove: set[str], relabel: dict[str, str], images: list[_Image], first) -> list[Entry]:
    held = base.hashes
    missing = sorted((remove | relabel.keys()) - held)
    if missing:
        raise UserError(
            f"No image of version {base.number} has the content hash {missing[0][:16]}…"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: it was removed or never added; "
            "nothing was changed."
        )
    labels = dict(relabel)
    added: dict[str, Entry] = {}
    for image in images:
        if image.hash in held - remove:
            labels[image.hash] = image.label  # already there: relabelled, not duplicated
        elif image.hash in first:
            old = first[image.hash]
            added[image.hash] = Entry(image.hash, old.path, image.label, old.split)
        else:
            path = (PurePosixPath(ADDED) / f"{image.hash}{image.ext}").as_posix()
            added[image.hash] = Entry(image.hash, path, image.label, "")
    kept = [e for e in base.entries if e.hash not in remove]
    out = [Entry(e.hash, e.path, labels.get(e.hash, e.label), e.split) for e in kept]
    return out + list(added.values())


def _check_result(base: Version, entries: list[Entry], dataset_id: str) -> None:
    if list(base.entries) == entries:
        raise UserError(f"Nothing changed: version {base.number} of the dataset already is this; no new version.")
    counts = Counter(e.label for e in entries)
    if sum(1 for n in counts.values() if n >= 2) < 2:
        raise UserError(
            f"This change would leave the dataset {dataset_id} with fewer than 2 classes of 2 or more images, too "
            "few to train; nothing was changed."
        )


def _store(files: Path, image: _Image) -> None:
    target = files / ADDED / f"{image.hash}{image.ext}"
    if target.is_file():
        return  # stored once by content: the same bytes are already there
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{image.hash}.tmp")
    tmp.write_bytes(image.data)
    os.replace(tmp, target)


def _describe(base: Version, entries: list[Entry]) -> str:
    before = {(e.hash, e.path): e.label for e in base.entries}
    after = {(e.hash, e.path): e.label for e in entries}
    d = Diff(base.number, base.number + 1, *_compare(before, after, base.entries, entries))
    return d.summary(numbers=False)


def _update_record(folder: Path, record: dict, entries: list[Entry]) -> None:
    """The record (and the database's row) count the newest version's images and classes and the bytes on disk."""
    with contextlib.suppress(OSError, ValueError):
        record = records.read_record(folder)
    classes = len({e.label for e in entries})
    record = {**record, "images": len(entries), "classes": classes, "bytes": records.folder_bytes(folder)}
    write_json(folder / records.RECORD_FILE, record)
    with contextlib.suppress(UserError), db.connect(write=True) as con:
        con.execute("UPDATE datasets SET images = ?, classes = ?, bytes = ? WHERE id = ?",
                    (record["images"], classes, record["bytes"], folder.name))  # fmt: skip


# ---------------------------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class Diff:
    a: int
    b: int
    added: list[Entry]
    removed: list[Entry]
    relabelled: list[tuple[Entry, Entry]]  # (old, new)

    def per_class(self) -> dict[str, dict[str, int]]:
        """class -> {"added", "removed", "relabelled_in", "relabelled_out"}, for the classes the change touches."""
        out: dict[str, dict[str, int]] = {}

        def bump(label: str, what: str) -> None:
            row = out.setdefault(label, {"added": 0, "removed": 0, "relabelled_in": 0, "relabelled_out": 0})
            row[what] += 1

        for e in self.added:
            bump(e.label, "added")
        for e in self.removed:
            bump(e.label, "removed")
        for old, new in self.relabelled:
            bump(old.label, "relabelled_out")
            bump(new.label, "relabelled_in")
        return {c: out[c] for c in sorted(out, key=class_order)}

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.relabelled)

    def summary(self, numbers: bool = True) -> str:
        """One line in words: "v1 → v2: 3 added (cats 2, zebras 1), 1 relabelled (cats → dogs 1)"."""
        head = f"v{self.a} → v{self.b}: " if numbers else ""
        if self.empty:
            return head + "no change"
        parts = []
        for what, found in (("added", self.added), ("removed", self.removed)):
            if found:
                parts.append(f"{len(found)} {what} ({_by_class(e.label for e in found)})")
        if self.relabelled:
            pairs = (f"{o.label} → {n.label}" for o, n in self.relabelled)
            parts.append(f"{len(self.relabelled)} relabelled ({_by_class(pairs)})")
        return head + ", ".join(parts)


def _by_class(labels: Iterable[str]) -> str:
    counted = Counter(labels)
    shown = [f"{c} {n}" for c, n in sorted(counted.items(), key=lambda cn: (-cn[1], class_order(cn[0])))]
    return ", ".join(shown[:4]) + (f", {len(shown) - 4} more" if len(shown) > 4 else "")


def _compare(before: dict, after: dict, a_entries, b_entries):
    """Images are matched by (hash, path): the same file in both versions."""
    added = [e for e in b_entries if (e.hash, e.path) not in before]
    removed = [e for e in a_entries if (e.hash, e.path) not in after]
    old = {(e.hash, e.path): e for e in a_entries}
    relabelled = [(old[k], e) for e in b_entries if (k := (e.hash, e.path)) in before and before[k] != e.label]
    return added, removed, relabelled


def diff(dataset_id: str, a: int, b: int) -> Diff:
    """What changed from version ``a`` to version ``b`` (either may be the later one)."""
    va, vb = get(dataset_id, a), get(dataset_id, b)
    before = {(e.hash, e.path): e.label for e in va.entries}
    after = {(e.hash, e.path): e.label for e in vb.entries}
    return Diff(a, b, *_compare(before, after, va.entries, vb.entries))


def new_validation(dataset_id: str, a: int, b: int, fraction: float) -> int:
    """How many of version ``b``'s validation images (at ``fraction``, the rule training splits by) are not among
    version ``a``'s: the images that make their validation accuracies differ."""
    va, vb = get(dataset_id, a), get(dataset_id, b)
    return len(_validation(vb, fraction) - _validation(va, fraction))


def _validation(version: Version, fraction: float) -> set[str]:
    return validation_digests([(e.hash, e.label, e.split) for e in version.entries], fraction)
