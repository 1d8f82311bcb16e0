"""Duplicates and leaks: the same photo twice in a dataset, in one class, in two classes, or on both sides of a split.

    found = find_duplicates(ds, progress=bar)        # counts and the pairs, leaks first; hashes cached per dataset
    found.summary()                                  # sentences for the Dataset page and `python -m core inspect`
    split, check = check_split(ds, split, drop=True) # training: drop validation images that duplicate training ones
    held_out_duplicates(run_dir, "val")              # Evaluate: (3, 40) when 3 of 40 validation images leak

Each image is decoded once (core.images' safe opener, EXIF orientation applied, any mode to RGB) into two keys:

* **exact**: the sha256 of the decoded RGB pixels and the size. The same photo as JPEG and PNG, or under two names,
  is an exact duplicate; a file that differs only in its metadata too.
* **perceptual**: ``imagehash.phash`` and ``imagehash.dhash`` (64 bits each, kept as uint64), and an 8x8 colour
  thumbnail (the image boxed down, 192 bytes). Two images are near duplicates when the two Hamming distances *added*
  are at most ``NEAR`` (24 of 128 bits) **and** their thumbnails differ by at most ``CLOSE`` (8 of 255, mean
  absolute difference): the hashes find the candidates, the thumbnail confirms them.

Why both hashes and 24, measured with this module's hashing on the ants/bees photos (398 photos, mostly 500x375;
79 003 pairs of different photos; the crops and copies made from 150 of them):

=====================================================  ===========  ===========  =================
                                                       pHash alone  dHash alone  pHash + dHash
=====================================================  ===========  ===========  =================
exact copy, half size, JPEG quality 50 (worst)         0-2          0-6          0-5
centred crop, 5 % in all (2.5 % off each side), worst  12           9            20
5 % cropped off two sides (from a corner), found       55 % at <=10              81 % at <=24
two different photos, closest pair                     14           9            35
=====================================================  ===========  ===========  =================

pHash alone cannot separate a corner crop (up to 18) from two different photos (14); the sum of both hashes keeps a
gap of 11 bits between the worst centred crop (20) and the closest different photos (35) -- on photos.

Why the thumbnail: on images with little detail the hashes alone are wrong. Of 360 validation images drawn from
the 1 797 distinct handwritten-digit scans (scikit-learn's ``load_digits``: 8x8 grey, here scaled to 32x32), the
hashes alone called 357 copies of training images. With the thumbnail confirming (``CLOSE`` = 8; ``CLOSE_SMALL``
= 5 when either image is under ``SMALL`` = 64 px on its shorter side, as scans and icons are), measured with
``image_hashes`` on the same sets (digits: six random splits):

==========================================================  ==============================
digit scans at 32 px, 360 validation vs 1 437 training      0-1 flagged (at most 0.3 %)
ants/bees: half size at JPEG quality 50 (150)                150 found
ants/bees: centred 5 % crop (150)                            137 found (91 %; 100 % by hashes)
ants/bees: 5 % off two sides, from a corner (150)            50 found (33 %; 81 % by hashes)
ants/bees: pairs of the 396 different photos                 0
==========================================================  ==============================

The price is the corner crops: cropping off two sides shifts the picture against its frame, and the thumbnails of
such a crop differ as much as two different scans of a digit do (at ``CLOSE`` = 8, 6-10 of the 360 digit scans
scaled to 32 px would be flagged; the corner crops' median is 9). A leak check that flags distinct images is worse
than none, so the rule takes the digits' side; copies resized, recompressed, re-saved or centre-cropped are still
found.

The search never compares pixels: it XORs the 64-bit hashes of every image with every other in chunks of rows
(numpy, ``np.bitwise_count``), 50 million pairs for 10 000 images in well under a second. Hashing runs in threads
(Pillow and hashlib release the GIL while decoding, resizing and hashing); ``benchmarks/duplicates.py`` measures it.

A saved dataset (core.datasets) keeps its hashes beside its files (``duplicates.npz``), tagged with ``HASH_VERSION``
and imagehash's version, so the hashing is paid once per dataset and a change of hashing code invalidates them.
A dataset read straight from a zip or a folder is hashed each time (nothing is written into the user's folder).

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

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from core.config import TrainConfig
from core.dataset import Dataset
from core.images import open_image, to_rgb

Progress = Callable[[int, int], None]

HASH_VERSION = 2  # bump when what is hashed changes: cached hashes of older versions are recomputed
NEAR = 24  # most differing bits of pHash + dHash (of 128) for two images to be near duplicates
CLOSE = 8.0  # and the most mean absolute difference of their 8x8 colour thumbnails (of 255) to confirm it
SMALL, CLOSE_SMALL = 64, 5.0  # images under 64 px on a side (scans, icons) must look closer still
THUMB = 8  # side of the thumbnail kept per image: 8 x 8 x 3 = 192 bytes
CACHE_FILE = "duplicates.npz"  # in a saved dataset's folder, beside files/
MAX_PAIRS = 500  # pairs kept in a report (the counts cover them all); leaks, then conflicts, then the rest
CHUNK = 512  # rows of the XOR matrix at a time: 512 x 10 000 x 8 bytes = 40 MB at most
WORKERS = max(1, min(4, os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------- hashing


@dataclass
class Hashes:
    """Per image (in the order of ``paths``): exact key, pHash, dHash and a colour thumbnail; ``ok`` False for an
    unreadable file."""

    paths: list[str]
    exact: np.ndarray  # (n,) |S32: sha256 of the decoded RGB pixels and the size
    phash: np.ndarray  # (n,) uint64
    dhash: np.ndarray  # (n,) uint64
    thumb: np.ndarray  # (n, 192) uint8: the image boxed down to 8 x 8 RGB
    side: np.ndarray  # (n,) uint32: the image's shorter side in pixels
    ok: np.ndarray  # (n,) bool

    FIELDS = ("exact", "phash", "dhash", "thumb", "side", "ok")


def image_hashes(path: str | os.PathLike) -> tuple[bytes, int, int, np.ndarray, int]:
    """(exact key, pHash, dHash, 8x8 RGB thumbnail, shorter side) of one image file. Raises
    core.images.ImageError or a decoder error."""
    with open_image(path) as im:
        im = to_rgb(ImageOps.exif_transpose(im))
        im.load()
        digest = hashlib.sha256(f"{im.width}x{im.height}:".encode())
        digest.update(im.tobytes())
        gray = im.convert("L")
        # Resizing once to 64x64 first is much cheaper than letting each hash resize the full image, and loses
        # nothing: pHash looks at 32x32 and dHash at 9x8.
        small = gray.resize((64, 64), Image.Resampling.LANCZOS, reducing_gap=3.0)
        thumb = np.asarray(im.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8).reshape(-1)
        return digest.digest(), _as_int(imagehash.phash(small)), _as_int(imagehash.dhash(small)), thumb, min(im.size)


def _as_int(h: imagehash.ImageHash) -> int:
    return int(np.packbits(h.hash.flatten()).view(">u8")[0])


def hash_images(root: Path, paths: Sequence[str], progress: Progress | None = None, workers: int = WORKERS) -> Hashes:
    """Hash every image (paths relative to ``root``) in ``workers`` threads; a file that fails is marked not ok."""
    n = len(paths)
    exact = np.zeros(n, dtype="S32")
    phash = np.zeros(n, dtype=np.uint64)
    dhash = np.zeros(n, dtype=np.uint64)
    thumb = np.zeros((n, THUMB * THUMB * 3), dtype=np.uint8)
    side = np.zeros(n, dtype=np.uint32)
    ok = np.zeros(n, dtype=bool)

    def work(i: int) -> None:
        try:
            exact[i], phash[i], dhash[i], thumb[i], side[i] = image_hashes(root / paths[i])
            ok[i] = True
        except Exception:  # ingestion checked every image; one damaged since is left out, not a crash
            pass

    with ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(work, range(n)), start=1):
            if progress and (done == n or done % 16 == 0):
                progress(done, n)
    return Hashes(list(paths), exact, phash, dhash, thumb, side, ok)


def _cache_path(root: Path) -> Path | None:
    """Where a saved dataset keeps its hashes; None for a folder that is not a saved dataset's files."""
    from core.datasets import FILES, RECORD_FILE

    root = Path(root)
    if root.name != FILES or not (root.parent / RECORD_FILE).is_file():
        return None
    return root.parent / CACHE_FILE


def _read_cache(path: Path | None) -> Hashes | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != HASH_VERSION or str(data["imagehash"]) != imagehash.__version__:
                return None
            return Hashes(data["paths"].tolist(), *(data[k] for k in Hashes.FIELDS))
    except (OSError, ValueError, KeyError):
        return None  # damaged or from another format: hashed again


def _pick(h: Hashes, paths: list[str]) -> Hashes:
    """The rows of ``h`` for ``paths`` (all present), in that order."""
    index = {p: k for k, p in enumerate(h.paths)}
    rows = np.array([index[p] for p in paths], dtype=np.int64)
    return Hashes(list(paths), *(getattr(h, k)[rows] for k in Hashes.FIELDS))


def _join(a: Hashes, b: Hashes) -> Hashes:
    return Hashes(a.paths + b.paths, *(np.concatenate([getattr(a, k), getattr(b, k)]) for k in Hashes.FIELDS))


def _write_cache(path: Path, h: Hashes) -> None:
    """Write atomically (a temporary file renamed into place): two sessions hashing at once leave one good file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".duplicates-", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, version=HASH_VERSION, imagehash=imagehash.__version__, paths=np.array(h.paths, dtype=str),
                     **{k: getattr(h, k) for k in Hashes.FIELDS})  # fmt: skip
        os.replace(tmp, path)
    except OSError:  # a read-only or vanished dataset folder: the hashes are simply not kept
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def cached(ds: Dataset) -> bool:
    """Whether every image of the dataset has its hashes on disk (finding its duplicates then decodes nothing)."""
    found = _read_cache(_cache_path(ds.root))
    return found is not None and {it.path for it in ds.items} <= set(found.paths)


def dataset_hashes(ds: Dataset, progress: Progress | None = None) -> Hashes:
    """The hashes of every image of ``ds`` (in ``ds.items`` order), from its cache when it is a saved dataset.

    Only images the cache lacks are hashed (a run may train on part of a saved dataset, with images excluded);
    they are added to it.
    """
    paths = [it.path for it in ds.items]
    cache = _cache_path(ds.root)
    found = _read_cache(cache)
    known = set(found.paths) if found is not None else set()
    missing = [p for p in paths if p not in known]
    if missing:
        new = hash_images(ds.root, missing, progress)
        found = new if found is None else _join(found, new)
        if cache is not None:
            _write_cache(cache, found)
    return _pick(found, paths)


# ---------------------------------------------------------------------------------------------- searching


def _distances(h: Hashes, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """pHash + dHash Hamming distances, ``len(rows)`` x ``len(cols)`` (uint8)."""
    d = np.bitwise_count(h.phash[rows, None] ^ h.phash[None, cols])
    d += np.bitwise_count(h.dhash[rows, None] ^ h.dhash[None, cols])
    return d


def difference(h: Hashes, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0-255) of the 8x8 colour thumbnails of images ``i[k]`` and ``j[k]``."""
    return np.abs(h.thumb[i].astype(np.int16) - h.thumb[j].astype(np.int16)).mean(axis=1)


def _confirmed(h: Hashes, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Of candidate pairs (hashes within the threshold): the same pixels, or thumbnails that look alike too."""
    close = np.where(np.minimum(h.side[i], h.side[j]) >= SMALL, CLOSE, CLOSE_SMALL)
    return (h.exact[i] == h.exact[j]) | (difference(h, i, j) <= close)


def _candidates(h: Hashes, rows: np.ndarray, cols: np.ndarray, threshold: int):
    """(r, c, d): positions in ``rows``/``cols`` of the confirmed pairs within ``threshold``, and their distances."""
    d = _distances(h, rows, cols)
    r, c = np.nonzero(d <= threshold)
    keep = _confirmed(h, rows[r], cols[c])
    return r[keep], c[keep], d[r[keep], c[keep]]


def near_pairs(h: Hashes, threshold: int = NEAR):
    """Yield (i, j, distance) arrays, i < j, of every duplicate pair of readable images, chunk by chunk."""
    good = np.flatnonzero(h.ok)
    for start in range(0, len(good), CHUNK):
        rows, cols = good[start : start + CHUNK], good[start:]
        r, c, d = _candidates(h, rows, cols, threshold)
        keep = c > r  # cols start at the chunk's first row: the diagonal and below are the same pairs again
        r, c, d = r[keep], c[keep], d[keep]
        if len(r):
            yield rows[r], cols[c], d


def duplicated(h: Hashes, queries: Sequence[int], targets: Sequence[int], threshold: int = NEAR) -> np.ndarray:
    """For each query index, whether some target image is its exact or near duplicate (bool array)."""
    queries, targets = np.asarray(queries, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    out = np.zeros(len(queries), dtype=bool)
    targets = targets[h.ok[targets]] if len(targets) else targets
    if not len(targets):
        return out
    for start in range(0, len(queries), CHUNK):
        rows = queries[start : start + CHUNK]
        r, _, _ = _candidates(h, rows, targets, threshold)
        found = np.zeros(len(rows), dtype=bool)
        found[r] = True
        out[start : start + len(rows)] = found & h.ok[rows]
    return out


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


def held_out_duplicates(run_dir: str | os.PathLike, part: str = "val") -> tuple[int, int] | None:
    """(images of the run's ``part`` -- "val" or "test" -- that duplicate one of its training images, images in it).

    From the run's metrics when training checked (``val_duplicates``, ``test_duplicates``); for a run trained before
    that, from the hashes its saved dataset has cached (never hashing here: a page calls it). None when unknown:
    no split.json, an old run whose dataset has no cached hashes, or a part the run does not have.
    """
    from core.runs import read_json

    run_dir = Path(run_dir)
    try:
        split = read_json(run_dir / "split.json")
        held = list(split.get(part) or [])
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if not held:
        return None
    try:
        metrics = read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        metrics = {}
    key = f"{part}_duplicates"
    if isinstance(metrics, dict) and isinstance(metrics.get(key), int):
        return metrics[key], len(held)
    root = split.get("root")
    h = _read_cache(_cache_path(Path(root))) if root else None
    if h is None:
        return None
    paths = h.paths
    index = {p: k for k, p in enumerate(paths)}
    train = [index[p] for p in split.get("train") or [] if p in index]
    queries = [index[p] for p in held if p in index]
    return int(duplicated(h, queries, train).sum()), len(held)


def over_limit(run_dir: str | os.PathLike) -> float | None:
    """The limit when training found more validation duplicates than it may drop and so dropped none; else None."""
    from core.runs import read_json

    try:
        limit = read_json(Path(run_dir) / "metrics.json").get("val_duplicates_over_limit")
    except (OSError, ValueError, AttributeError):
        return None
    return float(limit) if isinstance(limit, int | float) and not isinstance(limit, bool) else None
