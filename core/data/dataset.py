"""Dataset ingestion: safe zip extraction, layout detection, image validation, and the dataset report.

    ds = load_dataset("photos.zip", work_dir="work/")     # or a folder
    ds.classes, ds.report.to_dict()
    train_idx, val_idx = split_dataset(ds, config)      # what training fits on and what it validates with

Layouts understood (after stripping any single wrapper folder such as ``101_ObjectCategories/``):

* class folders at the top: ``cats/...``, ``dogs/...``;
* a split: ``train/`` and ``val/`` (or ``valid/``, ``validation/``), optionally ``test/``, each holding the same
  class folders. The given split is used as is; ``train/`` + ``test/`` alone gets a validation split from train.

An ``__other__`` folder beside the class or split folders is no class: its images (``Dataset.other``) are unlike
every class, and evaluation checks that the run answers "none of these" for them (core.evaluate.none_of_these).
A zip is extracted by ``core.data.zips``, which treats every zip as hostile.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.data.zips import Limits, Progress, extract_zip, is_junk
from core.imaging.pillow import ImageError, open_image
from core.util import names
from core.util.errors import UserError

VAL_NAMES = ("val", "valid", "validation")
OTHER = "__other__"  # not a class: images unlike every class, for checking "none of these"
IMBALANCE_RATIO = 10
SMALL_CLASS = 10  # fewer images than this gets a warning: too few to learn or to measure


@dataclass
class Item:
    path: str  # relative to Dataset.root, POSIX separators
    label: int
    split: str  # "train", "val", "test" or "" when the dataset has no split of its own
    digest: str = ""  # sha256 hex of the file's bytes (a saved dataset's version says it); "" when unknown


@dataclass
class Report:
    """What ingestion found; a plain object that also serialises to JSON."""

    source: str
    layout: str  # "classes" or "split"
    classes: list[str]
    counts: dict[str, dict[str, int]]  # class -> split -> count ("all" when no split)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    ignored: int = 0  # junk quietly left out (__MACOSX, dot-files, Thumbs.db...)
    image_sizes: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    other: int = 0  # usable images in the __other__ folder

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    items: list[Item]
    report: Report
    id: str = ""  # the saved dataset's id (core.workspace.datasets), "" for one loaded straight from a zip or folder
    name: str = ""  # the saved dataset's name, which its users may change; report.source stays the file's name
    store: str = ""  # a folder where what is derived from its images (their hashes) is kept: a saved dataset's own
    version: int = 0  # the saved dataset's version (core.workspace.versions); 0 when loaded from a zip or a folder
    other: list[str] = field(default_factory=list)  # the __other__ folder's images, relative to root: not a class

    @property
    def title(self) -> str:
        """What to call the dataset on a page: its saved name, else its file's name."""
        return self.name or self.report.source

    @property
    def has_split(self) -> bool:
        return self.report.layout == "split"

    def paths(self, split: str | None = None) -> list[Path]:
        return [self.root / it.path for it in self.items if split is None or it.split == split]

    def labels(self, split: str | None = None) -> list[int]:
        return [it.label for it in self.items if split is None or it.split == split]


# ---------------------------------------------------------------------------------------------- scanning


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_junk((p.name,)))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not is_junk((p.name,))]


def _find_root(folder: Path) -> Path:
    """Strip wrapper folders: descend while a folder holds exactly one sub-folder and no files."""
    while len(subs := _subdirs(folder)) == 1 and not _files(folder):
        folder = subs[0]
    return folder


def _split_dirs(root: Path) -> dict[str, Path] | None:
    by_name = {p.name.lower(): p for p in _subdirs(root)}
    if "train" not in by_name:
        return None
    val = next((by_name[n] for n in VAL_NAMES if n in by_name), None)
    if val is None and "test" not in by_name:
        return None
    splits = {"train": by_name["train"]}
    if val is not None:
        splits["val"] = val
    if "test" in by_name:
        splits["test"] = by_name["test"]
    return splits


def _check_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Fully decode (at reduced scale where possible) to catch truncated files; return (size, skip reason)."""
    if path.stat().st_size == 0:
        return None, "empty file"
    try:
        with open_image(path) as im:
            size = im.size
            im.draft("RGB", (64, 64))
            im.load()
        return size, None
    except ImageError as exc:
        return None, str(exc)
    except Exception as exc:  # any decoder failure is a damaged file, not a crash of ingestion
        if "truncated" in str(exc) or isinstance(exc, EOFError):
            return None, "truncated or damaged image"
        return None, f"damaged image ({exc})"


def scan_folder(
    folder: str | os.PathLike,
    source: str | None = None,
    ignored: int = 0,
    skipped: list[dict[str, str]] | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Find the class folders under ``folder``, validate every file by content, and build the Dataset.

    Long: one walk sorts every file of both layouts into candidates (the __other__ folder's too) or skipped ones."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder or a zip file.")
    source = source or folder.name
    skipped = list(skipped or [])
    root = _find_root(folder)
    splits = _split_dirs(root)
    layout = "split" if splits else "classes"
    split_roots = splits or {"": root}

    candidates: list[tuple[str, str, Path]] = []  # (split, class, file)
    if splits:  # whatever sits beside the split folders is left out, and the report must say so
        for f in _files(root):
            skipped.append({"file": _rel(f, folder), "reason": "not inside a class folder"})
        for other in _subdirs(root):
            if other in splits.values():
                continue
            for f, junk in _walk(other):
                if junk:
                    ignored += 1
                elif other.name == OTHER:
                    candidates.append(("", OTHER, f))
                else:
                    reason = f"not in the {', '.join(f'{s}/' for s in splits)} folders"
                    skipped.append({"file": _rel(f, folder), "reason": reason})
    for split, split_root in split_roots.items():
        for f in _files(split_root):
            skipped.append({"file": _rel(f, folder), "reason": "not inside a class folder"})
        for class_dir in _subdirs(split_root):
            for f, junk in _walk(class_dir):
                if junk:
                    ignored += 1
                else:
                    candidates.append((split, class_dir.name, f))
    class_dirs = {names.check(c.name, "The class folder") for r in split_roots.values() for c in _subdirs(r)} - {OTHER}
    if not class_dirs:
        if root != folder and _files(root):  # a lone folder of images was taken for a wrapper
            raise UserError(
                f"{source} has only one class folder ('{root.name}'); a classifier needs at least 2 classes, "
                "one folder each."
            )
        raise UserError(
            f"No class folders found in {source}: put the images in one folder per class (e.g. cats/..., dogs/...)."
        )

    results = _check_all([c[2] for c in candidates], progress)
    good: list[tuple[str, str, Path]] = []
    sizes: list[tuple[int, int]] = []
    for (split, cls, path), (size, reason) in zip(candidates, results, strict=True):
        if reason:
            skipped.append({"file": _rel(path, folder), "reason": reason})
        else:
            good.append((split, cls, path))
            sizes.append(size)
    return _build(folder, root, source, layout, class_dirs, good, sizes, skipped, ignored)


def _walk(folder: Path):
    """Yield (file, is_junk) for every file under ``folder``, in a stable order, not descending into junk folders."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_junk((d,)))
        for fn in sorted(filenames):
            yield Path(dirpath) / fn, is_junk((fn,))


def _check_all(paths: list[Path], progress: Progress | None):
    workers = min(8, (os.cpu_count() or 1) + 2)
    out = []
    with ThreadPoolExecutor(workers) as pool:
        for i, result in enumerate(pool.map(_check_image, paths), start=1):
            out.append(result)
            if progress:
                progress(i, len(paths))
    return out


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _build(folder, root, source, layout, class_dirs, good, sizes, skipped, ignored) -> Dataset:
    other = [_rel(path, folder) for _, cls, path in good if cls == OTHER]  # no class: never an item
    warnings: list[str] = []
    per_class = Counter(cls for _, cls, _ in good)
    train_count = Counter(cls for split, cls, _ in good if split in ("", "train"))
    classes = []
    for cls in sorted(class_dirs, key=lambda c: (c.lower(), c)):
        if per_class[cls] == 0:
            warnings.append(f"Class '{cls}' has no usable images and was left out.")
        elif per_class[cls] < 2 or train_count[cls] == 0:
            why = "only 1 usable image" if per_class[cls] < 2 else "no training images"
            warnings.append(f"Class '{cls}' has {why} and was left out: a class needs at least 2 to train and check.")
        else:
            classes.append(cls)
    if len(classes) < 2:
        found = f"only one class with usable images ('{classes[0]}')" if classes else "no class with usable images"
        raise UserError(f"{source} has {found}; a classifier needs at least 2 classes with 2 or more images each.")

    index = {c: i for i, c in enumerate(classes)}
    items = [Item(_rel(path, folder), index[cls], split) for split, cls, path in good if cls in index]
    counts: dict[str, dict[str, int]] = {c: {} for c in classes}
    for it in items:
        key = it.split or "all"
        counts[classes[it.label]][key] = counts[classes[it.label]].get(key, 0) + 1
    warnings += count_warnings({c: sum(v.values()) for c, v in counts.items()})
    if layout == "split" and not any(it.split == "val" for it in items):
        warnings.append("No val/ folder: a validation split is taken from train/.")
    kept = [s for s, (_, cls, _) in zip(sizes, good, strict=True) if cls in index]
    report = Report(
        source=source,
        layout=layout,
        classes=classes,
        counts=counts,
        skipped=sorted(skipped, key=lambda s: s["file"]),
        ignored=ignored,
        image_sizes=_size_stats(kept),
        warnings=warnings,
        other=len(other),
    )
    return Dataset(root=folder, classes=classes, items=items, report=report, other=other)


def count_warnings(totals: dict[str, int]) -> list[str]:
    """What the images per class warn about: imbalance, classes too small to learn or to measure."""
    warnings = []
    small, large = min(totals.values()), max(totals.values())
    if large > IMBALANCE_RATIO * small:
        warnings.append(
            f"The classes are imbalanced: '{max(totals, key=totals.get)}' has {large} images, "
            f"'{min(totals, key=totals.get)}' only {small} (more than {IMBALANCE_RATIO}:1)."
        )
    for c, n in totals.items():
        if n < SMALL_CLASS:
            warnings.append(f"Class '{c}' has only {n} images; results for it will be unreliable.")
    return warnings


def _size_stats(sizes: list[tuple[int, int]]) -> dict[str, float]:
    if not sizes:
        return {}
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    return {
        "min_width": min(widths),
        "median_width": statistics.median(widths),
        "max_width": max(widths),
        "min_height": min(heights),
        "median_height": statistics.median(heights),
        "max_height": max(heights),
    }


def load_dataset(
    source: str | os.PathLike,
    work_dir: str | os.PathLike | None = None,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Ingest a zip file or a folder. A zip is extracted into a new folder inside ``work_dir``.

    ``progress(done, total)`` is called while extracting and again while checking images.
    Raises ``UserError`` with a sentence for the user when the input cannot be used.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source} does not exist.")
    if source.is_dir():
        return scan_folder(source, progress=progress)
    work_dir = Path(work_dir or tempfile.gettempdir())
    folder, skipped, ignored = extract_zip(source, work_dir, limits, progress)
    try:
        return scan_folder(folder, source=source.name, ignored=ignored, skipped=skipped, progress=progress)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------- the split


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle each class with ``seed`` and hold out ``fraction`` of it (at least one image, never all)."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    train_idx, val_idx = [], []
    for label in np.unique(labels_arr):
        idx = rng.permutation(np.flatnonzero(labels_arr == label))
        n_val = min(max(1, round(len(idx) * fraction)), len(idx) - 1)
        val_idx += idx[:n_val].tolist()
        train_idx += idx[n_val:].tolist()
    return sorted(train_idx), sorted(val_idx)


def hash_fraction(digest: str) -> float:
    """Where an image's content hash falls in [0, 1): its side of the split, for every version of its dataset."""
    return int(digest[:12], 16) / 16**12


def hash_split(digests: list[str], labels: list, fraction: float) -> tuple[list[int], list[int]]:
    """Training and validation indices by content hash: an image is validation iff ``hash_fraction`` < ``fraction``.

    The same image is on the same side in every version of a dataset at the same fraction, so a later version's
    validation accuracy is comparable with an earlier one's (only the images added since are new to it). So that
    every class is checked and trained, a class with no image below ``fraction`` gives its lowest-fraction image to
    validation, and one with every image below gives its highest-fraction image to training: only such tiny classes
    can see an image change sides, when an image with a more extreme hash joins them.
    """
    by_class: dict = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train_idx, val_idx = [], []
    for idx in by_class.values():
        ranked = sorted(idx, key=lambda i: (hash_fraction(digests[i]), digests[i]))
        n_val = sum(1 for i in ranked if hash_fraction(digests[i]) < fraction)
        n_val = min(max(1, n_val), len(ranked) - 1) if len(ranked) > 1 else n_val
        val_idx += ranked[:n_val]
        train_idx += ranked[n_val:]
    return sorted(train_idx), sorted(val_idx)


def validation_digests(entries: list[tuple[str, object, str]], fraction: float) -> set[str]:
    """The digests ``split_dataset`` validates with, from (digest, label, split) triples of a saved version."""
    if any(split == "val" for _, _, split in entries):
        given = {d for d, _, split in entries if split == "val"}
        return given | {d for d, _, split in entries if split == "" and hash_fraction(d) < fraction}
    pool = [(d, label) for d, label, split in entries if split in ("", "train")]
    _, val = hash_split([d for d, _ in pool], [label for _, label in pool], fraction)
    return {pool[i][0] for i in val}


def split_dataset(dataset: Dataset, config: TrainConfig) -> tuple[list[int], list[int]]:
    """Indices into ``dataset.items`` for training and validation: the dataset's own split when it has one.

    Otherwise ``config.validation_split`` of each class (of train/ when there is only a test/ beside it) is held
    out. A saved dataset (every item has a ``digest``) is split by content hash (``hash_split``): an image keeps
    its side across the dataset's versions. A dataset loaded straight from a zip or a folder is shuffled with
    ``config.seed``, stratified. Either way the same dataset and config always give the same split. An image a
    version added to a dataset with its own val/ folder (split "") goes to validation by the same hash rule.
    """
    items = dataset.items
    hashed = bool(items) and all(it.digest for it in items)
    if dataset.has_split and any(it.split == "val" for it in items):
        unsplit = [i for i, it in enumerate(items) if it.split == "" and hashed]  # added by a later version
        added_val = {i for i in unsplit if hash_fraction(items[i].digest) < config.validation_split}
        return (
            sorted(
                [i for i, it in enumerate(items) if it.split == "train"] + [i for i in unsplit if i not in added_val]
            ),
            sorted([i for i, it in enumerate(items) if it.split == "val"] + list(added_val)),
        )
    pool = [i for i, it in enumerate(items) if it.split in ("", "train")]
    if hashed:
        tr, va = hash_split([items[i].digest for i in pool], [items[i].label for i in pool], config.validation_split)
    else:
        tr, va = stratified_split([items[i].label for i in pool], config.validation_split, config.seed)
    return [pool[i] for i in tr], [pool[i] for i in va]
