"""The workspace database: one SQLite file (WAL mode) with the records every session and the CLI share.

    with db.connect() as con:                 # a read
        rows = con.execute("SELECT * FROM jobs").fetchall()
    with db.connect(write=True) as con:       # a write transaction (BEGIN IMMEDIATE), committed on exit
        con.execute("UPDATE jobs SET done = done + 1 WHERE id = ?", (job_id,))

The file is ``<workspace>/workspace.db`` (the workspace is ``$CLASSIFIER_WORK_DIR``, default ``./work``). It holds
datasets, jobs and their progress, the Train form as each user left it per dataset, and an index of the runs
folder; model files stay in the run folders, which remain the source of truth.

Every connection is short-lived and writes take the write lock up front (``BEGIN IMMEDIATE``) and wait for it
(``busy_timeout``): two sessions, a worker and the CLI may write at once and no update is lost. A database that
stays locked, or a file that is not a database any more, raises ``WorkspaceError`` with a sentence naming the
file, never a raw sqlite3 traceback.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import UserError
from core.workspace import work_root

FILE_NAME = "workspace.db"
BUSY_TIMEOUT_MS = 15_000  # a writer holds the lock for milliseconds; 15 s of waiting means something is wrong
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id          TEXT PRIMARY KEY,   -- the first 16 hex digits of the zip's sha256: the same zip is one dataset
    name        TEXT NOT NULL,      -- shown everywhere; the user may rename it
    source      TEXT NOT NULL,      -- the uploaded file's name
    classes     INTEGER NOT NULL,
    images      INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,   -- on disk, extracted
    added       REAL NOT NULL,
    added_by    TEXT NOT NULL,
    last_used   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,  -- a training's id is also its run folder's name
    kind          TEXT NOT NULL,     -- train, lr_find, evaluate
    state         TEXT NOT NULL,
    owner         TEXT NOT NULL,
    dataset_id    TEXT,
    dataset_name  TEXT NOT NULL DEFAULT '',
    params        TEXT NOT NULL,     -- JSON: the TrainConfig, or a task's arguments
    created       REAL NOT NULL,
    started       REAL,
    finished      REAL,
    stage         TEXT NOT NULL DEFAULT '',
    done          INTEGER NOT NULL DEFAULT 0,
    total         INTEGER NOT NULL DEFAULT 0,
    epoch         INTEGER NOT NULL DEFAULT 0,
    epochs        INTEGER NOT NULL DEFAULT 0,
    batch         INTEGER NOT NULL DEFAULT 0,
    batches       INTEGER NOT NULL DEFAULT 0,
    eta           REAL,
    path_reason   TEXT NOT NULL DEFAULT '',
    phase2_start  INTEGER,
    error         TEXT,
    metrics       TEXT NOT NULL DEFAULT '{}',
    result        TEXT,              -- JSON: a task's result (the learning-rate finding)
    stop          INTEGER NOT NULL DEFAULT 0,
    worker        TEXT,              -- the process running it: "<host>:<pid>:<process start time>"
    restarted_as  TEXT               -- an interrupted job started again: the new job's id
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
CREATE TABLE IF NOT EXISTS job_points (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    kind    TEXT NOT NULL,           -- 'epoch' (one row of the history) or 'batch' (a training loss)
    data    TEXT NOT NULL            -- JSON
);
CREATE INDEX IF NOT EXISTS job_points_job ON job_points (job_id, seq);
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    dataset_id  TEXT,
    owner       TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT '',
    finished    TEXT NOT NULL DEFAULT '',
    val_accuracy REAL
);
CREATE INDEX IF NOT EXISTS runs_dataset ON runs (dataset_id);
CREATE TABLE IF NOT EXISTS form_settings (
    dataset_id  TEXT NOT NULL,
    user        TEXT NOT NULL,       -- '' for guests: one shared workspace
    settings    TEXT NOT NULL,       -- JSON: the Train form's widget values
    updated     REAL NOT NULL,
    PRIMARY KEY (dataset_id, user)
);
CREATE TABLE IF NOT EXISTS users (
    key         TEXT PRIMARY KEY,    -- '<issuer>|<subject>': who signed in (core.access)
    email       TEXT NOT NULL DEFAULT '',  -- for display and the admin list, as the provider gave it
    seen        REAL NOT NULL
);
"""


class WorkspaceError(UserError):
    """The workspace database cannot be used (locked, damaged, unwritable): a sentence naming the file."""


def db_path() -> Path:
    return work_root() / FILE_NAME


_ready: set[Path] = set()
_ready_lock = threading.Lock()


def _explain(exc: sqlite3.Error, path: Path) -> WorkspaceError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return WorkspaceError(
            f"The workspace database {path} is locked by another program and did not free up within "
            f"{BUSY_TIMEOUT_MS // 1000} s; try again in a moment."
        )
    if isinstance(exc, sqlite3.OperationalError) and ("unable to open" in text or "readonly" in text):
        return WorkspaceError(
            f"The workspace database {path} cannot be opened for writing ({text}); check the folder's permissions."
        )
    return WorkspaceError(
        f"The workspace database {path} is damaged ({text}). Move the file aside and reload: a new one is made "
        "and the saved runs and datasets are found again in their folders (the job history and the saved Train "
        "forms are lost)."
    )


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A file deleted (or moved aside) since this process made its tables comes back empty: make them again.
    fresh = not path.exists()
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if fresh:
        _ready.discard(path)
    if path not in _ready:
        with _ready_lock:
            if path not in _ready:
                con.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
                con.execute("BEGIN IMMEDIATE")
                for statement in _statements():
                    con.execute(statement)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                con.execute("COMMIT")
                _ready.add(path)
    con.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash, fast
    return con


def _statements() -> list[str]:
    # executescript would commit the open transaction first; run the schema statement by statement inside it
    lines = [line.split("--", 1)[0] for line in SCHEMA.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@contextmanager
def connect(write: bool = False, path: Path | None = None) -> Iterator[sqlite3.Connection]:
    """A connection to the workspace database (or the one at ``path``); ``write=True`` wraps the block in one
    write transaction."""
    path = path or db_path()
    try:
        con = _open(path)
    except sqlite3.Error as exc:
        raise _explain(exc, path) from None
    try:
        if write:
            con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            if write and con.in_transaction:
                con.execute("ROLLBACK")
            raise
        if write:
            con.execute("COMMIT")
    except sqlite3.Error as exc:
        raise _explain(exc, path) from None
    finally:
        con.close()


def check() -> None:
    """Open the database once (creating it when missing): raises ``WorkspaceError`` when it cannot be used."""
    with connect() as con:
        con.execute("SELECT count(*) FROM jobs").fetchone()
