"""Duplicates and leaks: the same photo twice in a dataset, in one class, in two classes, or on both sides of a split.

    found = find_duplicates(ds, progress=bar)        # counts and the pairs, leaks first; hashes cached per dataset
    found.summary()                                  # sentences for the Dataset page and `python -m core inspect`
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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.data.hashes import NEAR, Hashes, dataset_hashes, duplicated, near_pairs
from core.data.zips import Progress

MAX_PAIRS = 500  # pairs kept in a report (the counts cover them all); leaks, then conflicts, then the rest


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


def find_duplicates(ds: Dataset, progress: Progress | None = None, threshold: int = NEAR) -> DuplicateReport:
    """Exact and near duplicates in ``ds``; its images are hashed once (``progress(done, total)``) and cached."""
    return report(ds, dataset_hashes(ds, progress), threshold)


def report(ds: Dataset, h: Hashes, threshold: int = NEAR) -> DuplicateReport:
    """Classify and count every pair within ``threshold``; keep the most telling ``MAX_PAIRS`` of them."""
    labels = np.array([it.label for it in ds.items], dtype=np.int64)
    split_codes = {s: k for k, s in enumerate(sorted({it.split for it in ds.items}))}
    splits = np.array([split_codes[it.split] for it in ds.items], dtype=np.int64)
    out = DuplicateReport(images=int(h.ok.sum()), unreadable=int((~h.ok).sum()), threshold=threshold)
    involved = np.zeros(len(ds.items), dtype=bool)
    # Kept per relation, so a flood of same-class pairs never hides a leak; each sorted by distance below.
    kept: dict[int, list[tuple[int, int, int]]] = {0: [], 1: [], 2: []}
    for i, j, d in near_pairs(h, threshold):
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
        # exact pairs first within a relation: their distance counts as -1 when sorting
        order_d = np.where(exact, -1, d.astype(np.int64))
        for rel in (0, 1, 2):
            sel = np.flatnonzero(relation == rel)
            sel = sel[np.argsort(order_d[sel], kind="stable")[:MAX_PAIRS]]  # a chunk may hold millions of pairs
            if len(kept[rel]) < MAX_PAIRS and len(sel):
                kept[rel].extend(zip(order_d[sel].tolist(), i[sel].tolist(), j[sel].tolist(), strict=True))
    out.near = out.pairs_total - out.exact
    out.same_class = out.pairs_total - out.different_classes
    out.involved = int(involved.sum())
    chosen = [t for rel in (0, 1, 2) for t in sorted(kept[rel])[:MAX_PAIRS]][:MAX_PAIRS]
    items = ds.items
    for sort_d, i, j in chosen:
        a, b = items[i], items[j]
        out.pairs.append(
            Pair(a.path, b.path, "exact" if sort_d < 0 else "near", max(sort_d, 0), ds.classes[a.label],
                 ds.classes[b.label], a.split, b.split)
        )  # fmt: skip
    return out


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
