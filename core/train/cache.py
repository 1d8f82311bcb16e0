"""A bounded on-disk cache of arrays (decoded images, frozen-prefix features), shared by every job.

    cache = ArrayCache()                             # $CLASSIFIER_CACHE_DIR, default ./cache
    namespace = settings_digest({...})               # everything that changes the result, e.g. size, weights
    arr = cache.get(namespace, file_digest(path))    # None on a miss; keyed by the file's content
    cache.put(namespace, file_digest(path), arr)

Entries are written to a temporary name and renamed into place, so two jobs filling the same entry at once
both end with a complete file; when the cache grows past its limit the least recently used entries go.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from core import settings


def cache_dir() -> Path:
    return settings.current().cache_dir


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=12).hexdigest()


class ArrayCache:
    def __init__(self, root: str | os.PathLike | None = None, limit_bytes: int | None = None):
        self.root = Path(root) if root else cache_dir()
        limit_mb = settings.current().cache_limit_mb
        self.limit = limit_bytes if limit_bytes is not None else int(limit_mb * 1024**2)
        self._lock = threading.Lock()

    def _path(self, namespace: str, digest: str) -> Path:
        return self.root / namespace / digest[:2] / f"{digest}.npy"

    def get(self, namespace: str, digest: str) -> np.ndarray | None:
        path = self._path(namespace, digest)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing, or damaged by a crash: a miss either way
            return None
        os.utime(path)  # recently used: evicted last
        return arr

    def put(self, namespace: str, digest: str, arr: np.ndarray) -> None:
        path = self._path(namespace, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def size(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.rglob("*.npy") if p.is_file()]

    def trim(self) -> int:
        """Remove least recently used entries until the cache fits its limit; return bytes freed."""
        with self._lock:
            entries = []
            for p in self._files():
                try:
                    st = p.stat()
                except FileNotFoundError:  # another job trimmed it first
                    continue
                entries.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in entries)
            freed = 0
            for _, size, p in sorted(entries):
                if total - freed <= self.limit:
                    break
                p.unlink(missing_ok=True)
                freed += size
            return freed

    def clear(self) -> int:
        """Remove everything; return bytes freed."""
        with self._lock:
            freed = self.size()
            shutil.rmtree(self.root, ignore_errors=True)
            return freed

    def info(self) -> dict[str, Any]:
        files = self._files()
        return {
            "path": str(self.root),
            "entries": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "limit_bytes": self.limit,
        }
