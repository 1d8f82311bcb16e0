"""Files: JSON written atomically, content digests, the versions of installed packages.

write_json(path, data); read_json(path)
with locked(path): ...           # one writer at a time across processes (a file lock beside ``path``)
sha256_of("model.keras")       # hex; remembered while the file's size and time stay the same
file_digest("photo.jpg")       # a short content hash: the same photo under another name is the same entry
package_versions(("keras", "numpy"))
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: readers on other sessions never see half a file, and two writers at once each
    write a whole file of their own (a unique temporary name each) and the last one wins."""
    path = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # as a plain write would make it: readable by the server's other processes
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One holder at a time, across the server's processes, of ``<path>.lock`` (read, change, write without losing
    another's change)."""
    path = Path(path)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_SHA256: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> digest: a model is hashed once per process
_sha_lock = threading.Lock()


def sha256_of(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex), remembered while its size and modification time stay the same."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        if key in _SHA256:
            return _SHA256[key]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    with _sha_lock:
        if len(_SHA256) > 256:
            _SHA256.clear()
        _SHA256[key] = digest
    return digest


def file_digest(path: str | os.PathLike) -> str:
    """Content hash of a file: the same photo under another name or in another upload is the same entry."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()[:32]


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """The installed versions of these packages (None: not installed), without importing them."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
