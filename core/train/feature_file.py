"""Frozen-prefix features of a large dataset on disk, read back in batches: memory stays flat as datasets grow.

    store = FeatureFile.create(folder, rows=100_000, shape=(2, 2, 512))  # a scratch .npy file, deleted on close
    store.write(i, features)                    # row i (in any order)
    x = store.rows([3, 17, 4])                  # float32 (3, 2, 2, 512), read with pread
    batches = Batches(store, range(0, 90_000), y, batch_size=64, shuffle=True, seed=0)  # a keras PyDataset
    model.fit(batches, validation_data=Batches(store, range(90_000, 100_000), y_val, 256), ...)
    store.close()

Why not a memory map: the pages of a mapped file count in the process's resident memory while mapped, so reading
every row each epoch would grow it to the file's size; ``os.pread`` into a batch-sized buffer goes through the page
cache (which the kernel reclaims) and the process holds one batch at a time. The file is unlinked as soon as it is
opened, so a crash leaves nothing behind on Linux; it lives under the cache folder, outside any run.

Rows are written once by ``core.train.features.extract`` when the features of a training set exceed
``STREAM_BYTES``; smaller sets stay one array in memory, which is what most runs are and is faster.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

STREAM_BYTES = 512 * 1024**2  # features of a training set above this stay on disk and are read in batches
SUFFIX = ".features"  # not .npy: the array cache's trimming must never see a scratch file


class FeatureFile:
    """A (rows, *shape) float32 array in an unlinked file, written row by row and read back by row indices."""

    def __init__(self, fd: int, rows: int, shape: tuple[int, ...]):
        self._fd, self.shape = fd, (rows, *shape)
        self._row = int(np.prod(shape)) * 4

    @classmethod
    def create(cls, folder: str | os.PathLike, rows: int, shape: Sequence[int]) -> FeatureFile:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, suffix=SUFFIX)
        os.unlink(name)  # the open descriptor keeps the data; nothing outlives the process
        store = cls(fd, rows, tuple(int(s) for s in shape))
        os.ftruncate(fd, rows * store._row)
        return store

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return len(self) * self._row

    def write(self, i: int, row: np.ndarray) -> None:
        data = np.ascontiguousarray(row, dtype=np.float32)
        if data.nbytes != self._row:
            raise ValueError(f"A row has {self._row} bytes. Received: {data.nbytes} bytes")
        os.pwrite(self._fd, data.tobytes(), i * self._row)

    def rows(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``index`` in that order; sorted runs of consecutive rows are read with one call each."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.shape[1:]), dtype=np.float32)
        flat = out.reshape(len(index), -1).view(np.uint8)
        order = np.argsort(index, kind="stable")
        k = 0
        while k < len(order):
            end = k + 1
            while (
                end < len(order) and index[order[end]] == index[order[end - 1]] + 1 and order[end] == order[end - 1] + 1
            ):
                end += 1  # consecutive rows landing in consecutive slots: one read
            start = index[order[k]]
            view = flat[order[k] : order[k] + (end - k)].reshape(-1)
            got = os.preadv(self._fd, [view], int(start) * self._row)
            if got != view.nbytes:
                raise OSError(f"Feature file read {got} of {view.nbytes} bytes.")
            k = end
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()


class Batches(keras.utils.PyDataset):
    """Batches of ``store`` rows ``index`` (with labels and per-image weights when given), reshuffled each epoch.

    With ``labels=None`` it gives inputs only (for ``predict``). Shuffling is by row; within a batch the rows are
    read in file order, so a batch costs a few sequential reads.
    """

    def __init__(self, store: FeatureFile, index, labels=None, batch_size: int = 64, shuffle: bool = False,
                 seed: int = 0, sample_weight: np.ndarray | None = None):  # fmt: skip
        super().__init__()
        self.store, self.index = store, np.asarray(index, dtype=np.int64)
        self.labels, self.weight = labels, sample_weight
        self.batch_size, self.shuffle = batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.index)) if shuffle else np.arange(len(self.index))

    def __len__(self) -> int:
        return math.ceil(len(self.index) / self.batch_size)

    def __getitem__(self, b: int):
        pick = self._order[b * self.batch_size : (b + 1) * self.batch_size]
        x = self.store.rows(self.index[pick])
        if self.labels is None:
            return (x,)
        y = np.asarray(self.labels[pick])
        return (x, y) if self.weight is None else (x, y, np.asarray(self.weight[pick], dtype=np.float32))

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.index))


def sample_weights(y: np.ndarray, class_weight: dict[int, float] | None) -> np.ndarray | None:
    """Per-image weights from one-hot labels and ``fit``'s class weights (None: none)."""
    if not class_weight:
        return None
    table = np.array([class_weight.get(c, 1.0) for c in range(y.shape[1])], dtype=np.float32)
    return table[np.asarray(y).argmax(axis=1)]
