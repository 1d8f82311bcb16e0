"""Perceptual hashes of images and the near-duplicate rule: what makes two images copies of each other.

    h = hash_images(root, paths, progress)      # Hashes: exact key, pHash, dHash, 8x8 thumbnail per image
    h = dataset_hashes(ds)                      # the same, cached in a saved dataset's store folder
    i, j = near_pairs(h)                        # every pair within the rule
    duplicated(h, queries, targets)             # which queries copy one of the targets

Each image is decoded once (core.imaging.pillow' safe opener, EXIF orientation applied, any mode to RGB) into two keys:

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

The search never compares pixels. It is every pair, O(N²/2): the 64-bit pHash and dHash of each image XORed with
those of every later one and their bits counted (NumPy, vectorised, ``np.bitwise_count``), walked in blocks of
``ROWS`` x ``COLUMNS`` (512 x 2048) whose arrays are made once per search and reused, so its memory does not grow
with N; the few pairs within ``NEAR`` then have their thumbnails compared, ``CONFIRM`` at a time. Measured with
``python benchmarks/duplicates.py --search-only --images N`` (random distinct hashes, 1 % planted copies; 2-core AMD
EPYC shared with other work, load average near 3), search and report together:

=================  ===============  ==========================  ==============================================
images             pairs            blocked (this code)         rows only (512 x N at a time, before)
=================  ===============  ==========================  ==============================================
10 000             49 995 000       0.41 s, 11 MiB at most      0.51 s, 49 MiB
100 000            4 999 950 000    26.7 s, 14 MiB at most      45.7 s, 491 MiB
=================  ===============  ==========================  ==============================================

(peak of the arrays allocated, by tracemalloc). Reusing the block's arrays took a third off the time (2.5 s to 1.7 s
for the XOR and count of 30 000 hashes): a new 8 MB array per block costs a page fault per 4 KB. A dataset of
thousands of copies of one blank image has billions of candidate pairs; each block still holds at most ``ROWS`` x
``COLUMNS`` of them (about 60 MiB at worst: 12.5 million pairs of 5 000 identical images took 5.8 s and 62 MiB). At
100 000 images the search is tens of seconds, so the pages run it as a job (``core.jobs.work.duplicates``) that
counts the pairs compared.

Hashing runs in threads (Pillow and hashlib release the GIL while decoding, resizing and hashing): about 280 photos
a second on that machine (``benchmarks/duplicates.py --data``), so 100 000 photos are some 6 minutes, once.

A saved dataset (core.workspace.datasets) keeps its hashes beside its files (``duplicates.npz``), tagged with
``HASH_VERSION`` and imagehash's version, so the hashing is paid once per dataset and a change of hashing code
invalidates them; they are written every ``SAVE_EVERY`` images, so a hashing stopped half-way keeps most of its
work. A dataset read straight from a zip or a folder is hashed each time (nothing is written into the user's folder).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from core.data.dataset import Dataset
from core.data.zips import Progress
from core.imaging.pillow import open_image, to_rgb

HASH_VERSION = 2  # bump when what is hashed changes: cached hashes of older versions are recomputed
NEAR = 24  # most differing bits of pHash + dHash (of 128) for two images to be near duplicates
CLOSE = 8.0  # and the most mean absolute difference of their 8x8 colour thumbnails (of 255) to confirm it
SMALL, CLOSE_SMALL = 64, 5.0  # images under 64 px on a side (scans, icons) must look closer still
THUMB = 8  # side of the thumbnail kept per image: 8 x 8 x 3 = 192 bytes
CACHE_FILE = "duplicates.npz"  # in a saved dataset's folder, beside files/
ROWS, COLUMNS = 512, 2048  # blocks of the XOR matrix: 1M pairs, 8 MB of uint64 + 3 MB, whatever N
CONFIRM = 16_384  # candidate pairs whose thumbnails are compared at once: 16 384 x 192 x 2 bytes = 6 MB a copy
SAVE_EVERY = 10_000  # images hashed between two writes of a saved dataset's cache: what a stop can lose
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
    core.imaging.pillow.ImageError or a decoder error."""
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

    pool = ThreadPoolExecutor(workers)
    try:
        for done, _ in enumerate(pool.map(work, range(n)), start=1):
            if progress and (done == n or done % 16 == 0):
                progress(done, n)
    finally:  # a progress that raises (a stop) ends the hashing now, not after every image queued
        pool.shutdown(cancel_futures=True)
    return Hashes(list(paths), exact, phash, dhash, thumb, side, ok)


def _cache_path(store: str | os.PathLike) -> Path | None:
    """Where a dataset keeps its hashes: in its ``store`` folder (a saved dataset's own, ``Dataset.store``); None for
    a dataset without one (loaded straight from a zip or folder)."""
    return Path(store) / CACHE_FILE if store else None


def read_hashes(store: str | os.PathLike) -> Hashes | None:
    """The hashes kept in a dataset's ``store`` folder, without hashing anything (None when there are none)."""
    return _read_cache(_cache_path(store))


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
    found = _read_cache(_cache_path(ds.store))
    return found is not None and {it.path for it in ds.items} <= set(found.paths)


def dataset_hashes(ds: Dataset, progress: Progress | None = None) -> Hashes:
    """The hashes of every image of ``ds`` (in ``ds.items`` order), from its cache when it is a saved dataset.

    Only images the cache lacks are hashed (a run may train on part of a saved dataset, with images excluded);
    they are added to it every ``SAVE_EVERY`` images, so a hashing stopped half-way (``progress`` raising) keeps
    most of what it did.
    """
    paths = [it.path for it in ds.items]
    cache = _cache_path(ds.store)
    found = _read_cache(cache)
    known = set(found.paths) if found is not None else set()
    missing = [p for p in paths if p not in known]
    step = SAVE_EVERY if cache is not None else max(1, len(missing))
    for start in range(0, len(missing), step):
        part = missing[start : start + step]
        counted = (lambda done, _, at=start: progress(at + done, len(missing))) if progress else None
        new = hash_images(ds.root, part, counted)
        found = new if found is None else _join(found, new)
        if cache is not None:
            _write_cache(cache, found)
    return _pick(found, paths)


# ---------------------------------------------------------------------------------------------- searching


def difference(h: Hashes, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0-255) of the 8x8 colour thumbnails of images ``i[k]`` and ``j[k]``."""
    return np.abs(h.thumb[i].astype(np.int16) - h.thumb[j].astype(np.int16)).mean(axis=1)


def _confirmed(h: Hashes, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Of candidate pairs (hashes within the threshold): the same pixels, or thumbnails that look alike too."""
    close = np.where(np.minimum(h.side[i], h.side[j]) >= SMALL, CLOSE, CLOSE_SMALL)
    return (h.exact[i] == h.exact[j]) | (difference(h, i, j) <= close)


class _Blocks:
    """The arrays of one block of the XOR matrix, made once per search and reused: a new 8 MB array per block
    costs a page fault per 4 KB, and reusing them took a third off the search's time."""

    def __init__(self) -> None:
        cells = ROWS * COLUMNS
        self._x = np.empty(cells, dtype=np.uint64)
        self._d, self._t, self._m = np.empty(cells, np.uint8), np.empty(cells, np.uint8), np.empty(cells, bool)

    def within(self, h: Hashes, rows: np.ndarray, cols: np.ndarray, threshold: int):
        """(r, c, d): positions in ``rows``/``cols`` of the pairs whose pHash + dHash Hamming distance is within
        ``threshold``, and those distances (not yet confirmed by the thumbnails)."""
        shape = (len(rows), len(cols))
        x, d, t, m = (a[: shape[0] * shape[1]].reshape(shape) for a in (self._x, self._d, self._t, self._m))
        np.bitwise_xor(h.phash[rows, None], h.phash[None, cols], out=x)
        np.bitwise_count(x, out=d)
        np.bitwise_xor(h.dhash[rows, None], h.dhash[None, cols], out=x)
        np.add(d, np.bitwise_count(x, out=t), out=d)
        if not np.less_equal(d, threshold, out=m).any():
            return (np.zeros(0, dtype=np.int64),) * 2 + (np.zeros(0, dtype=np.uint8),)
        r, c = np.nonzero(m)
        return r, c, d[r, c]


def _confirm(h: Hashes, i: np.ndarray, j: np.ndarray, d: np.ndarray):
    """Yield the confirmed ones of candidate pairs ``(i, j, d)``, ``CONFIRM`` at a time: a block where every pair is
    a candidate (thousands of copies of one blank image) compares its thumbnails in bounded memory too."""
    for start in range(0, len(i), CONFIRM):
        a, b, dist = i[start : start + CONFIRM], j[start : start + CONFIRM], d[start : start + CONFIRM]
        keep = _confirmed(h, a, b)
        if keep.any():
            yield a[keep], b[keep], dist[keep]


def _pairs_in(first_row: int, rows: int, first_col: int, cols: int) -> int:
    """How many pairs (a, b), a < b, a block covers: rows ``first_row``... by columns ``first_col``... (positions)."""
    a = np.arange(first_row, first_row + rows)
    return int(np.clip(first_col + cols - np.maximum(first_col, a + 1), 0, None).sum())


def near_pairs(h: Hashes, threshold: int = NEAR, progress: Progress | None = None):
    """Yield (i, j, distance) arrays, i < j, of every duplicate pair of readable images, at most ``CONFIRM`` pairs
    at a time; ``progress(pairs compared, pairs in all)`` after each block.

    The upper triangle of the XOR matrix is walked in blocks of ``ROWS`` x ``COLUMNS``, row blocks in order and
    within one its column blocks left to right: every pair once, whatever the block sizes (only the order in which
    pairs come out depends on them)."""
    good = np.flatnonzero(h.ok)
    m, blocks = len(good), _Blocks()
    total, done = m * (m - 1) // 2, 0
    for start in range(0, m, ROWS):
        rows = good[start : start + ROWS]
        for first in range(start, m, COLUMNS):
            cols = good[first : first + COLUMNS]
            r, c, d = blocks.within(h, rows, cols, threshold)
            keep = first + c > start + r  # the diagonal and below are the same pairs again
            yield from _confirm(h, rows[r[keep]], cols[c[keep]], d[keep])
            done += _pairs_in(start, len(rows), first, len(cols))
            if progress:
                progress(done, total)


def duplicated(h: Hashes, queries: Sequence[int], targets: Sequence[int], threshold: int = NEAR) -> np.ndarray:
    """For each query index, whether some target image is its exact or near duplicate (bool array)."""
    queries, targets = np.asarray(queries, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    out = np.zeros(len(queries), dtype=bool)
    targets = targets[h.ok[targets]] if len(targets) else targets
    if not len(targets):
        return out
    blocks = _Blocks()
    for start in range(0, len(queries), ROWS):
        rows = queries[start : start + ROWS]
        found = np.zeros(len(rows), dtype=bool)
        for first in range(0, len(targets), COLUMNS):
            cols = targets[first : first + COLUMNS]
            r, c, _ = blocks.within(h, rows, cols, threshold)
            open_ = ~found[r]  # a query found already needs no other copy confirmed
            r, c = r[open_], c[open_]
            for k in range(0, len(r), CONFIRM):
                a, b = r[k : k + CONFIRM], c[k : k + CONFIRM]
                found[a[_confirmed(h, rows[a], cols[b])]] = True
        out[start : start + len(rows)] = found & h.ok[rows]
    return out
