"""Duplicates and leaks: the same photo twice in a dataset, in one class, in two classes, or on both sides of a split.

    found = find_duplicates(ds, progress=bar)        # counts and the pairs, leaks first; hashes cached per dataset
    found.summary()                                  # sentences for the Dataset page and `python -m core inspect`
    kept(ds)                                         # the report find_duplicates kept beside a saved dataset, or None
    split, check = check_split(ds, split, drop=True) # training: drop validation images that duplicate training ones
    held_out_duplicates(run_dir, "val")              # Evaluate: (3, 40) when 3 of 40 validation images leak

Hashing and the near-duplicate rule, with the measurements behind it: ``core.data.hashes``.

Pairs are classified: *same class*, *different classes* (conflicting labels: one of the two labels is wrong, or
the image belongs to neither), and *leak* when the two sit in different parts of the dataset's own split
(``train/``, ``val/``, ``test/``). A dataset without a split of its own has its validation images drawn when
training; then ``check_split`` finds the validation images with a duplicate among the training ones and, with
``drop_val_duplicates`` (on by default), removes them from validation. Decision: a class never loses its last
validation image this way (validation with a class missing says nothing about that class), and at most
``val_duplicates_limit`` (5 %) of validation goes: beyond it none is dropped and the run says so (``check_split``).
The images kept although they duplicate are counted in the run's metrics (``val_duplicates``) and the Evaluate page
says so.

A report holds the counts of every pair but only ``MAX_PAIRS`` pairs, so a dataset with billions of pairs (thousands
of copies of one blank image) costs what one with a few does. A saved dataset keeps its last report beside its hashes
(``duplicates.json``), tagged with what it depends on (the hashing, the rule, and its images' paths, classes and
splits): the Dataset page reads it back (``kept``) instead of comparing every pair again, 5 billion at 100 000
images; another version of the dataset, or other hashing code, is searched again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import imagehash
import numpy as np

from core.config import TrainConfig
from core.data import hashes
from core.data.dataset import Dataset
from core.data.hashes import NEAR, Hashes, dataset_hashes, duplicated, near_pairs
from core.data.zips import Progress

MAX_PAIRS = 500  # pairs kept in a report (the counts cover them all); leaks, then conflicts, then the rest
REPORT_FILE = "duplicates.json"  # the last report, in a saved dataset's folder beside its hashes


@dataclass
class Pair:
    a: str  # paths relative to the dataset's root
    b: str
    kind: str  # "exact" (same decoded pixels) or "near"
    distance: int  # differing bits of pHash + dHash, of 128 (0 for an exact pair)
    class_a: str
    class_b: str
    split_a: str  # "train", "val", "test" or "" (no split of its own)
    split_b: str

    @property
    def leak(self) -> bool:
        return self.split_a != self.split_b

    @property
    def relation(self) -> str:
        """'leak' (across the dataset's own split), 'different classes' (conflicting labels) or 'same class'."""
        return "leak" if self.leak else "different classes" if self.class_a != self.class_b else "same class"

    def to_dict(self) -> dict:
        return {**asdict(self), "relation": self.relation, "conflicting_labels": self.class_a != self.class_b}


@dataclass
class DuplicateReport:
    """What the search found. The counts cover every pair; ``pairs`` holds the first ``MAX_PAIRS``, leaks first."""

    images: int  # images hashed
    unreadable: int
    pairs_total: int = 0
    exact: int = 0  # pairs with the same decoded pixels
    near: int = 0
    same_class: int = 0
    different_classes: int = 0  # conflicting labels, whatever the split
    leaks: int = 0  # across the dataset's own train/val/test folders, whatever the classes
    involved: int = 0  # images in at least one pair
    pairs: list[Pair] = field(default_factory=list)
    threshold: int = NEAR

    @property
    def more(self) -> int:
        return self.pairs_total - len(self.pairs)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pairs"] = [p.to_dict() for p in self.pairs]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DuplicateReport:
        """The report ``to_dict`` wrote (a kept report, a job's result)."""
        pair_fields = {f.name for f in fields(Pair)}
        pairs = [Pair(**{k: v for k, v in p.items() if k in pair_fields}) for p in data.get("pairs", [])]
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)} and k != "pairs"},
                   pairs=pairs)  # fmt: skip

    def summary(self) -> list[str]:
        """Sentences for a person: what was found, and what it means."""
        if not self.pairs_total:
            return [f"No duplicates among the {_count(self.images, 'image')} (exact or near, resized, recompressed "
                    "or slightly cropped)."]  # fmt: skip
        lines = [
            f"{_count(self.pairs_total, 'pair')} of duplicate images ({self.exact:,} exact, {self.near:,} near), "
            f"involving {_count(self.involved, 'image')} of {self.images:,}."
        ]
        if self.leaks:
            lines.append(
                f"{_count(self.leaks, 'pair')} across train/val/test (a leak): the model is scored on images it "
                "trained on, so its scores are likely optimistic."
            )
        if self.different_classes:
            lines.append(
                f"{_count(self.different_classes, 'pair')} in different classes (conflicting labels): the same "
                "picture cannot be both."
            )
        if self.same_class:
            lines.append(f"{_count(self.same_class, 'pair')} within the same class.")
        return lines


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def find_duplicates(
    ds: Dataset, progress: Progress | None = None, threshold: int = NEAR, comparing: Progress | None = None
) -> DuplicateReport:
    """Exact and near duplicates in ``ds``; its images are hashed once (``progress(done, total)``) and cached, then
    every pair compared (``comparing(pairs done, pairs in all)``). A saved dataset keeps the report too (``kept``)."""
    found = report(ds, dataset_hashes(ds, progress), threshold, comparing)
    keep(ds, found)
    return found


def report(ds: Dataset, h: Hashes, threshold: int = NEAR, progress: Progress | None = None) -> DuplicateReport:
    """Classify and count every pair within ``threshold``; keep the most telling ``MAX_PAIRS`` of them.

    What is held while counting is bounded whatever the number of pairs: the counts, one flag per image, and per
    relation the ``MAX_PAIRS`` best pairs so far (exact first, then by distance, then by position), so the pairs
    kept do not depend on the order the search finds them in."""
    labels = np.array([it.label for it in ds.items], dtype=np.int64)
    split_codes = {s: k for k, s in enumerate(sorted({it.split for it in ds.items}))}
    splits = np.array([split_codes[it.split] for it in ds.items], dtype=np.int64)
    out = DuplicateReport(images=int(h.ok.sum()), unreadable=int((~h.ok).sum()), threshold=threshold)
    involved = np.zeros(len(ds.items), dtype=bool)
    bits = max(1, len(ds.items).bit_length())  # one int64 sort key per pair: (distance + 1, i, j)
    # Kept per relation, so a flood of same-class pairs never hides a leak.
    kept = {rel: np.zeros(0, dtype=np.int64) for rel in (0, 1, 2)}
    for i, j, d in near_pairs(h, threshold, progress):
        exact = h.exact[i] == h.exact[j]
        leak = splits[i] != splits[j]
        conflict = labels[i] != labels[j]
        out.pairs_total += len(i)
        out.exact += int(exact.sum())
        out.leaks += int(leak.sum())
        out.different_classes += int(conflict.sum())
        involved[i] = True
        involved[j] = True
        relation = np.where(leak, 0, np.where(conflict, 1, 2))
        # exact pairs first within a relation: they sort as distance -1 (0 in the key, the others distance + 1)
        order_d = np.where(exact, 0, d.astype(np.int64) + 1)
        key = (order_d << (2 * bits)) | (i.astype(np.int64) << bits) | j.astype(np.int64)
        for rel in (0, 1, 2):
            kept[rel] = _smallest(np.concatenate([kept[rel], key[relation == rel]]))
    out.near = out.pairs_total - out.exact
    out.same_class = out.pairs_total - out.different_classes
    out.involved = int(involved.sum())
    chosen = np.concatenate([np.sort(kept[rel]) for rel in (0, 1, 2)])[:MAX_PAIRS].tolist()
    items, mask = ds.items, (1 << bits) - 1
    for k in chosen:
        sort_d, a, b = (k >> (2 * bits)) - 1, items[(k >> bits) & mask], items[k & mask]
        out.pairs.append(
            Pair(a.path, b.path, "exact" if sort_d < 0 else "near", max(sort_d, 0), ds.classes[a.label],
                 ds.classes[b.label], a.split, b.split)
        )  # fmt: skip
    return out


def _smallest(keys: np.ndarray) -> np.ndarray:
    """The ``MAX_PAIRS`` smallest keys, in no order."""
    return np.partition(keys, MAX_PAIRS - 1)[:MAX_PAIRS] if len(keys) > MAX_PAIRS else keys


# ---------------------------------------------------------------------------------------------- kept reports


def _tag(ds: Dataset, threshold: int) -> str:
    """What a report depends on besides the images' content (a saved dataset's files never change under its id):
    the hashing, the rule and which images with which class and split. Another version, exclusion or hashing
    code gives another tag, and the report is searched again."""
    digest = hashlib.sha256(
        json.dumps([hashes.HASH_VERSION, imagehash.__version__, threshold, MAX_PAIRS, ds.classes]).encode()
    )
    for it in ds.items:
        digest.update(f"\n{it.path}\t{it.label}\t{it.split}".encode())
    return digest.hexdigest()


def keep(ds: Dataset, found: DuplicateReport) -> None:
    """Write the report into a saved dataset's store folder (atomically; nothing for a dataset without one, or a
    folder that cannot be written: the report is simply not kept)."""
    if not ds.store:
        return
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".duplicates-", suffix=".json", dir=ds.store)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"tag": _tag(ds, found.threshold), "report": found.to_dict()}, f, ensure_ascii=False)
        os.replace(tmp, Path(ds.store) / REPORT_FILE)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def kept(ds: Dataset, threshold: int = NEAR) -> DuplicateReport | None:
    """The report ``keep`` wrote for this dataset as it is now (its version, its hashing), or None."""
    path = Path(ds.store) / REPORT_FILE if ds.store else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("tag") != _tag(ds, threshold):
            return None
        return DuplicateReport.from_dict(data["report"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged or from another format: searched again


# ---------------------------------------------------------------------------------------------- training and runs


DEFAULT_LIMIT = TrainConfig().val_duplicates_limit


@dataclass
class SplitCheck:
    """What ``check_split`` found and did, as the run's metrics record it."""

    dropped: list[str] = field(default_factory=list)  # validation images removed (paths relative to the root)
    remaining: int = 0  # validation images still duplicating a training image (drop off, or a class's last one)
    test: int | None = None  # test images duplicating a training image (None: no test/ folder)
    over_limit: bool = False  # more than the limit's share would have gone: none was dropped
    limit: float = DEFAULT_LIMIT

    def metrics(self) -> dict:
        out = {"val_duplicates_dropped": len(self.dropped), "val_duplicates": self.remaining}
        if self.dropped:
            out["val_duplicates_dropped_files"] = self.dropped
        if self.over_limit:
            out["val_duplicates_over_limit"] = self.limit
        if self.test is not None:
            out["test_duplicates"] = self.test
        return out


def allowed_drops(val_images: int, limit: float) -> int:
    """How many validation images ``limit`` (a share) lets the check drop: at least one when the limit is above 0,
    so that one real copy in a small validation set still goes."""
    if limit <= 0 or not val_images:
        return 0
    return max(1, int(limit * val_images + 1e-9))


def check_split(
    ds: Dataset,
    split: tuple[list[int], list[int]],
    drop: bool = True,
    progress: Progress | None = None,
    limit: float = DEFAULT_LIMIT,
) -> tuple[tuple[list[int], list[int]], SplitCheck]:
    """Find the validation (and test) images that duplicate a training image; with ``drop``, take those validation
    images out of validation (never a class's last one).

    Decision: the check drops at most ``limit`` of the validation images (see ``allowed_drops``). When it would drop
    more it drops none -- that many look-alikes are more often distinct images with little detail than real copies,
    and validation must not shrink silently to a few images -- and records it (``over_limit``), so the run and its
    Evaluate page say so; the user looks at the pairs and trains again with a higher limit to drop them all.
    Returns the split to train with and what was found."""
    train_idx, val_idx = split
    h = dataset_hashes(ds, progress)
    dup = duplicated(h, val_idx, train_idx)
    check = SplitCheck(limit=limit)
    test_idx = [i for i, it in enumerate(ds.items) if it.split == "test"]
    if test_idx:
        check.test = int(duplicated(h, test_idx, train_idx).sum())
    left: dict[int, int] = {}
    for i in val_idx:
        left[ds.items[i].label] = left.get(ds.items[i].label, 0) + 1
    chosen = set()
    for i, is_dup in zip(val_idx, dup, strict=True):
        label = ds.items[i].label
        if is_dup and left[label] > 1:
            left[label] -= 1
            chosen.add(i)
    if drop and len(chosen) > allowed_drops(len(val_idx), limit):
        check.over_limit = True
    if not drop or check.over_limit:
        check.remaining = int(dup.sum())
        return split, check
    keep = [i for i in val_idx if i not in chosen]
    check.dropped = [ds.items[i].path for i in val_idx if i in chosen]
    check.remaining = int(dup.sum()) - len(chosen)
    return (train_idx, keep), check
