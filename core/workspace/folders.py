"""The workspace folder: saved datasets and the workspace database for everyone, a work folder per session.

    folder = session_dir(session_id)      # work/<session id>/, created on demand

The root is ``$CLASSIFIER_WORK_DIR`` (default ``./work``); saved datasets live in its ``datasets/``
(core.workspace.datasets).
Session folders untouched for a day are removed when a new session starts, so abandoned uploads do not pile up on
a shared server. Only folders this module made are ever removed: each holds a marker file (``.session-folder``), and
anything else in the work folder (a runs folder placed there, a user's own files) is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from core import settings

MAX_AGE = 24 * 3600
# Folders of the workspace that belong to everyone, not to one session: prune() leaves them alone.
SHARED = frozenset({"datasets"})
MARKER = ".session-folder"  # in every session folder: prune() removes a folder only when it holds this file


def work_root() -> Path:
    return settings.current().work_dir


def session_dir(session_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session_id):
        raise ValueError(f"session_id must be a short file-name-safe id. Received: session_id={session_id!r}")
    path = work_root() / session_id
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()
    os.utime(path)
    return path


def prune(max_age: float = MAX_AGE) -> None:
    """Remove session folders not used for ``max_age`` seconds: only folders session_dir() made (they hold its
    marker), never the shared ones, nor anything else someone put in the work folder."""
    root = work_root()
    if not root.is_dir():
        return
    cutoff = time.time() - max_age
    for path in root.iterdir():
        if path.name in SHARED or path.is_symlink() or not path.is_dir():
            continue
        if (path / MARKER).is_file() and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
