"""Safe zip extraction: every zip is treated as hostile.

    folder = extract_zip("photos.zip", work_dir, limits=Limits(), progress=report)

Entries that would land outside the extraction folder and symlinks refuse the whole zip; nested archives are not
expanded; entry count, total size and per-entry compression ratio are checked from the headers before anything is
written and again while streaming, so a bomb is stopped before it fills the disk. A failed extraction leaves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.util.errors import UserError
from core.util.text import human_size

JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx", ".ds_store"}
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst"}

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


def is_junk(parts: tuple[str, ...]) -> bool:
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
        if is_junk(parts):
            if not info.is_dir():
                ignored += 1
            keep = next(i for i, p in enumerate(parts) if is_junk((p,)))  # e.g. empty_class/ of empty_class/.DS_Store
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
