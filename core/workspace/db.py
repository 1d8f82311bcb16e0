"""The workspace database: one SQLite file (WAL mode) with the records every session and the CLI share.

    with db.connect() as con:                 # a read
        rows = con.execute("SELECT * FROM jobs").fetchall()
    with db.connect(write=True) as con:       # a write transaction (BEGIN IMMEDIATE), committed on exit
        con.execute("UPDATE jobs SET done = done + 1 WHERE id = ?", (job_id,))

The file is ``<workspace>/workspace.db`` (the workspace is ``$CLASSIFIER_WORK_DIR``, default ``./work``). It holds
datasets, jobs and their progress, the Train form as each user left it per dataset, the datasets' review
queues, and an index of the runs folder; model files stay in the run folders, which remain the source of truth.

Every connection is short-lived and writes take the write lock up front (``BEGIN IMMEDIATE``) and wait for it
(``busy_timeout``): two sessions, a worker and the CLI may write at once and no update is lost. A database that
stays locked, or a file that is not a database any more, raises ``WorkspaceError`` with a sentence naming the
file, never a raw sqlite3 traceback. A full disk, a folder or file the server may not write, and a damaged file are
each told apart, with what to do.

The schema grows by migrations: a database made by an earlier version gets the columns added since
(``MIGRATIONS``) the first time this version opens it.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core import settings
from core.util.errors import UserError

BUSY_TIMEOUT_MS = 15_000  # a writer holds the lock for milliseconds; 15 s of waiting means something is wrong
SCHEMA_VERSION = 2
# Columns added to a table since version 1, by the version that added them: an older database gets them too.
MIGRATIONS = {
    2: [("jobs", "heartbeat", "REAL"), ("jobs", "stop_time", "REAL")],
}

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
    restarted_as  TEXT,              -- an interrupted job started again: the new job's id
    heartbeat     REAL,              -- when its process last said it is alive (every few seconds while it runs)
    stop_time     REAL               -- when a stop was first asked for
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
    key         TEXT PRIMARY KEY,    -- '<issuer>|<subject>': who signed in (core.workspace.access)
    email       TEXT NOT NULL DEFAULT '',  -- for display and the admin list, as the provider gave it
    seen        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,    -- shown in lists and in the key itself; not a secret
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,       -- sha256 of the whole key: the key itself is never stored
    run_id      TEXT NOT NULL DEFAULT '',   -- the one run it may use ('' = every run of scope_owner)
    scope_owner TEXT NOT NULL DEFAULT '',   -- the owner of the run(s) it may use
    created_by  TEXT NOT NULL,
    created     REAL NOT NULL,
    expires     REAL,                -- epoch seconds; NULL = never
    revoked     REAL,
    last_used   REAL,
    uses        INTEGER NOT NULL DEFAULT 0,
    store       INTEGER NOT NULL DEFAULT 0  -- 1: what it is sent goes to the run's dataset review queue
);
CREATE TABLE IF NOT EXISTS review_items (
    id          TEXT PRIMARY KEY,
    dataset_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,       -- 'new': an image to add; 'suspect': a suspected label error
    hash        TEXT NOT NULL,       -- sha256 of the image's bytes: one item per dataset, kind and image
    ext         TEXT NOT NULL DEFAULT '',   -- of the stored file, datasets/<id>/review/<hash><ext>
    name        TEXT NOT NULL,       -- the file's name as sent; a suspect's path in the dataset
    source      TEXT NOT NULL,       -- api, classify, demo, upload, suspect
    run_id      TEXT NOT NULL DEFAULT '',
    key_id      TEXT NOT NULL DEFAULT '',
    top         TEXT NOT NULL DEFAULT '[]', -- JSON [[class, probability], ...], most likely first
    not_sure    INTEGER NOT NULL DEFAULT 0,
    none_of_these INTEGER,           -- NULL: the run cannot say
    added       REAL NOT NULL,
    added_by    TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,       -- queued, labelled, discarded, committed
    label       TEXT,
    decided_by  TEXT NOT NULL DEFAULT '',
    decided_at  REAL,
    version     INTEGER,             -- the dataset version that closed it (NULL: still open)
    UNIQUE (dataset_id, kind, hash)
);
CREATE INDEX IF NOT EXISTS review_items_open ON review_items (dataset_id, kind, state);
CREATE TABLE IF NOT EXISTS review_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id  TEXT NOT NULL,
    user        TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    before      TEXT NOT NULL        -- JSON: the item's state, label, decided_by and decided_at before the decision
);
CREATE INDEX IF NOT EXISTS review_log_user ON review_log (dataset_id, user, seq);
"""


class WorkspaceError(UserError):
    """The workspace database cannot be used (locked, on a full disk, unwritable, damaged): a sentence naming the
    file and what to do."""


def db_path() -> Path:
    """``CLASSIFIER_DB`` when set (keep it on the app machine's own disk: SQLite's locks do not hold over NFS), else
    ``workspace.db`` in the work folder."""
    return settings.current().db_path


_ready: set[Path] = set()
_ready_lock = threading.Lock()


def _explain(exc: BaseException, path: Path) -> WorkspaceError:
    """What went wrong with the database at ``path``, in one sentence with what to do."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorname", "") or ""
    number = getattr(exc, "errno", None)
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return WorkspaceError(
            f"The workspace database {path} is locked by another program and did not free up within "
            f"{BUSY_TIMEOUT_MS // 1000} s; try again in a moment."
        )
    if code.startswith("SQLITE_FULL") or "disk is full" in text or number in (errno.ENOSPC, errno.EDQUOT):
        return _disk_full(path)
    unwritable = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
    if code.startswith(unwritable) or "readonly" in text or "unable to open" in text or isinstance(exc, OSError):
        return _unwritable(path, text)
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return WorkspaceError(
            f"The workspace database {path} is damaged ({text}). Move the file aside and reload: a new one is made "
            "and the saved runs and datasets are found again in their folders (the job history and the saved "
            "Train forms are lost)."
        )
    if code.startswith("SQLITE_IOERR"):
        return WorkspaceError(
            f"The workspace database {path} could not be read or written ({text}): check the disk {_disk(path)} "
            "and the system's log, then reload."
        )
    return WorkspaceError(f"The workspace database {path} could not be used ({text}); the server's log has more.")


def _disk(path: Path) -> Path:
    """The mount point of the disk that holds ``path`` (or would hold it)."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def _disk_full(path: Path) -> WorkspaceError:
    disk = _disk(path)
    try:
        free = f", {shutil.disk_usage(disk).free / 2**20:,.0f} MB free"
    except OSError:
        free = ""
    return WorkspaceError(
        f"The disk holding the workspace database {path} is full (the disk mounted at {disk}{free}): free space on "
        f"it, or set CLASSIFIER_WORK_DIR to a folder on a larger disk, and try again."
    )


def _server_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"user id {os.geteuid()}"


def _unwritable(path: Path, text: str) -> WorkspaceError:
    """The database file or its folder cannot be made, opened or written by this process's user."""
    user = _server_user()
    if path.is_dir():
        return WorkspaceError(
            f"The workspace database {path} is a folder, not a file: move it aside (or set CLASSIFIER_WORK_DIR to "
            "another folder) and reload."
        )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        what = f"the folder {folder}"  # SQLite writes its journal files beside the database: the folder too
    elif path.exists() and not os.access(path, os.R_OK | os.W_OK):
        what = f"the file {path}"
    else:
        what = f"the folder {folder} and the file {path}"
    return WorkspaceError(
        f"The workspace database {path} cannot be written ({text}): make {what} writable by the server's user "
        f"({user}), then reload."
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
                _migrate(con)
                con.execute("COMMIT")
                _ready.add(path)
    con.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash, fast
    return con


def _migrate(con: sqlite3.Connection) -> None:
    """Bring a database made by an earlier version up to ``SCHEMA_VERSION`` (inside the caller's transaction)."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    for step in sorted(v for v in MIGRATIONS if v > version):
        for table, column, kind in MIGRATIONS[step]:
            have = {row["name"] for row in con.execute(f"PRAGMA table_info({table})")}
            if column not in have:  # a new database has it already, from SCHEMA
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


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
    except (sqlite3.Error, OSError) as exc:  # OSError: its folder cannot be made
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
