"""Dataset ingestion: safe zip extraction, layout detection, image validation, and the dataset report.

    ds = load_dataset("photos.zip", work_dir="work/")     # or a folder
    ds.classes, ds.report.to_dict()
    train_idx, val_idx = split_dataset(ds, config)      # what training fits on and what it validates with

Layouts understood (after stripping any single wrapper folder such as ``101_ObjectCategories/``):

* class folders at the top: ``cats/...``, ``dogs/...``;
* a split: ``train/`` and ``val/`` (or ``valid/``, ``validation/``), optionally ``test/``, each holding the same
  class folders. The given split is used as is; ``train/`` + ``test/`` alone gets a validation split from train.

Every zip is treated as hostile: entries that would land outside the extraction folder and symlinks refuse
the whole zip; nested archives are not expanded; entry count, total size and per-entry compression ratio are
checked from the headers before anything is written and again while streaming, so a bomb is stopped before it
fills the disk. A failed extraction leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import statistics
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from core import names
from core.errors import UserError
from core.images import ImageError, open_image

if TYPE_CHECKING:
    from core.config import TrainConfig

JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx", ".ds_store"}
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst"}
VAL_NAMES = ("val", "valid", "validation")
IMBALANCE_RATIO = 10
SMALL_CLASS = 10  # fewer images than this gets a warning: too few to learn or to measure

Progress = Callable[[int, int], None]

try:
    import lzma
except ImportError:  # Python built without lzma: zipfile then refuses LZMA entries with NotImplementedError
    lzma = None
# corrupt compressed data surfaces as the decompressor's own error, not as zipfile.BadZipFile
_DECOMPRESS_ERRORS = (zlib.error, *((lzma.LZMAError,) if lzma else ()))


@dataclass
class Limits:
    """Extraction limits; the defaults fit Caltech101-sized zips with room to spare. Raise them per call."""

    max_entries: int = 200_000
    max_total_bytes: int = 8 * 1024**3
    max_ratio: float = 200.0  # uncompressed / compressed per entry; JPEGs are ~1, text ~10, bombs ~1000
    ratio_floor_bytes: int = 1024**2  # small entries may compress well without being a threat


@dataclass
class Item:
    path: str  # relative to Dataset.root, POSIX separators
    label: int
    split: str  # "train", "val", "test" or "" when the dataset has no split of its own


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
    id: str = ""  # the saved dataset's id (core.datasets), "" for one loaded straight from a zip or folder
    name: str = ""  # the saved dataset's name, which its users may change; report.source stays the file's name

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


# ---------------------------------------------------------------------------------------------- extraction


def _is_junk(parts: tuple[str, ...]) -> bool:
    return any(p.lower() in JUNK_NAMES or p.startswith(".") for p in parts)


def _safe_parts(name: str) -> tuple[str, ...]:
    """Split a zip entry name into path parts, refusing anything that could leave the extraction folder."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise UserError(f"The zip contains an absolute path ({name!r}); refusing to extract it.")
    parts = tuple(p for p in PurePosixPath(unified).parts if p not in ("", "."))
    if ".." in parts:
        raise UserError(f"The zip contains a path that points outside its folder ({name!r}); refusing to extract it.")
    if any("\x00" in p for p in parts):
        raise UserError(f"The zip contains an invalid file name ({name!r}); refusing to extract it.")
    return parts


def extract_zip(
    zip_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> tuple[Path, list[dict[str, str]], int]:
    """Extract a zip into a new folder inside ``work_dir``; return (folder, skipped entries, ignored count).

    Raises ``UserError`` (and removes the half-written folder) for a zip that is unreadable, unsafe or too big.
    """
    limits = limits or Limits()
    name = Path(zip_path).name
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):  # the last: unknown zip version
        raise UserError(f"{name} is not a zip file or cannot be read.") from None
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="dataset-", dir=work_dir)).resolve()
    try:
        with zf:
            skipped, ignored = _extract_members(zf, dest, name, limits, progress)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest, skipped, ignored


def _extract_members(zf: zipfile.ZipFile, dest: Path, name: str, limits: Limits, progress: Progress | None):
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise UserError(f"{name} has {len(infos):,} entries, more than the limit of {limits.max_entries:,}.")
    # Every name is checked before anything is written, so a hostile zip is refused without touching the disk.
    files, folders, skipped, ignored = _plan(infos)
    # zipfile never yields more than an entry's declared size, so the headers let a zip that is too big be
    # refused up front instead of after writing gigabytes; _stream_entry still counts the real bytes.
    declared = sum(info.file_size for info, _ in files)
    if declared > limits.max_total_bytes:
        raise UserError(
            f"{name} unpacks to {human_size(declared)}, more than the limit of {human_size(limits.max_total_bytes)}; "
            "it may be a zip bomb."
        )
    for info, _ in files:
        if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise _ratio_error(info, name, limits, info.file_size)
    packed = sum(info.compress_size for info, _ in files)  # many small entries can be a bomb together
    if declared > limits.ratio_floor_bytes and declared > limits.max_ratio * max(packed, 1):
        raise UserError(
            f"{name} expands more than {limits.max_ratio:.0f} times (the limit), from {human_size(packed)} to "
            f"{human_size(declared)}; it may be a zip bomb."
        )
    # folders are made even when nothing usable is extracted into them, so an empty class is reported, not lost
    for parts, info in sorted(folders.items()):
        _mkdir(_target(dest, parts, info), info)
    total = 0
    for i, (info, parts) in enumerate(files, start=1):
        if progress:
            progress(i, len(files))
        target = _target(dest, parts, info)
        _mkdir(target.parent, info)
        total = _stream_entry(zf, info, target, total, limits, name)
    return skipped, ignored


def _plan(infos: list[zipfile.ZipInfo]):
    """Sort entries into (files to extract, folders to make, skipped, ignored count); refuse any unsafe entry."""
    files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    folders: dict[tuple[str, ...], zipfile.ZipInfo] = {}
    skipped: list[dict[str, str]] = []
    ignored = 0
    seen: set[str] = set()
    for info in infos:
        parts = _safe_parts(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"The zip contains a symbolic link ({info.filename!r}); refusing to extract it.")
        if not parts:
            continue
        if _is_junk(parts):
            if not info.is_dir():
                ignored += 1
            keep = next(i for i, p in enumerate(parts) if _is_junk((p,)))  # e.g. empty_class/ of empty_class/.DS_Store
            if keep:
                folders.setdefault(parts[:keep], info)
            continue
        if info.is_dir():
            folders.setdefault(parts, info)
            continue
        rel = "/".join(parts)
        if PurePosixPath(rel).suffix.lower() in ARCHIVE_SUFFIXES:
            skipped.append({"file": rel, "reason": "archive inside the zip (nested archives are not expanded)"})
            continue
        if rel.lower() in seen:
            skipped.append({"file": rel, "reason": "duplicate name in the zip"})
            continue
        seen.add(rel.lower())
        files.append((info, parts))
    return files, folders, skipped, ignored


def _target(dest: Path, parts: tuple[str, ...], info: zipfile.ZipInfo) -> Path:
    target = dest.joinpath(*parts)
    if not target.resolve().is_relative_to(dest):  # belt and braces after _safe_parts
        raise UserError(f"The zip contains a path that points outside its folder ({info.filename!r}).")
    return target


def _mkdir(folder: Path, info: zipfile.ZipInfo) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file and a folder with the same name
        raise UserError(f"Could not write {info.filename!r} while extracting: {exc.strerror}.") from None


def _ratio_error(info: zipfile.ZipInfo, name: str, limits: Limits, unpacked: int) -> UserError:
    return UserError(
        f"{info.filename!r} in {name} expands more than {limits.max_ratio:.0f} times (the limit), "
        f"from {human_size(info.compress_size)} to {'over ' if unpacked < info.file_size else ''}"
        f"{human_size(unpacked)}; "
        "it may be a zip bomb."
    )


def _stream_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, total: int, limits: Limits, name: str):
    """Copy one entry in chunks, counting real bytes (headers can lie) against the limits."""
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                total += len(chunk)
                if total > limits.max_total_bytes:
                    raise UserError(
                        f"{name} unpacks to more than the limit of {human_size(limits.max_total_bytes)}; "
                        "it may be a zip bomb."
                    )
                if written > limits.ratio_floor_bytes and written > limits.max_ratio * max(info.compress_size, 1):
                    raise _ratio_error(info, name, limits, written)
                out.write(chunk)
    except UserError:
        raise
    except RuntimeError as exc:  # encrypted entries
        raise UserError(f"{name} cannot be read: {exc}.") from None
    except NotImplementedError:
        raise UserError(f"{name} uses a compression method that cannot be read; re-zip it with plain zip.") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, *_DECOMPRESS_ERRORS) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile) and exc.errno is not None:
            raise UserError(f"Could not write {info.filename!r} while extracting: {exc.strerror}.") from None
        raise UserError(f"{name} is damaged ({info.filename!r} cannot be read).") from None
    return total


def human_size(n: float) -> str:
    """'512 bytes', '3.4 MB', '1.2 GB': a size as people read it."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------------- scanning


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_junk((p.name,)))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not _is_junk((p.name,))]


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
    """Find the class folders under ``folder``, validate every file by content, and build the Dataset."""
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
    class_dirs = {names.check(c.name, "The class folder") for r in split_roots.values() for c in _subdirs(r)}
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
        dirnames[:] = sorted(d for d in dirnames if not _is_junk((d,)))
        for fn in sorted(filenames):
            yield Path(dirpath) / fn, _is_junk((fn,))


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
    totals = {c: sum(v.values()) for c, v in counts.items()}
    small, large = min(totals.values()), max(totals.values())
    if large > IMBALANCE_RATIO * small:
        warnings.append(
            f"The classes are imbalanced: '{max(totals, key=totals.get)}' has {large} images, "
            f"'{min(totals, key=totals.get)}' only {small} (more than {IMBALANCE_RATIO}:1)."
        )
    for c, n in totals.items():
        if n < SMALL_CLASS:
            warnings.append(f"Class '{c}' has only {n} images; results for it will be unreliable.")
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
    )
    return Dataset(root=folder, classes=classes, items=items, report=report)


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


def split_dataset(dataset: Dataset, config: TrainConfig) -> tuple[list[int], list[int]]:
    """Indices into ``dataset.items`` for training and validation: the dataset's own split when it has one.

    Otherwise ``config.validation_split`` of each class (of train/ when there is only a test/ beside it) is held
    out, shuffled with ``config.seed``: the same dataset and config always give the same split.
    """
    items = dataset.items
    if dataset.has_split and any(it.split == "val" for it in items):
        return (
            [i for i, it in enumerate(items) if it.split == "train"],
            [i for i, it in enumerate(items) if it.split == "val"],
        )
    pool = [i for i, it in enumerate(items) if it.split in ("", "train")]
    tr, va = stratified_split([items[i].label for i in pool], config.validation_split, config.seed)
    return [pool[i] for i in tr], [pool[i] for i in va]
