"""A job's records as its own process reads and writes them: ``Store``, the stop flag, the heartbeat, progress.

store = Store(db_path)                      # the SQLite file, on this machine (RemoteStore: through Ray)
writer = JobWriter(store, job_id)           # progress, throttled to FLUSH_SECONDS
with Heartbeat(store, job_id): ...          # "alive" every few seconds, whatever the job is doing
stop = StopFlag(store, job_id)              # set here, or asked for in the records by any process
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from core import settings
from core.jobs.kinds import TRAIN
from core.jobs.states import COMPLETED, FINISHED_SQL, PROGRESS_FIELDS, STARTING, STOPPED, WORKING
from core.workspace import db, runs

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.5  # progress reaches the database at most this often (and at once for what matters)
STOP_POLL_SECONDS = 0.25  # how often a worker looks for a stop asked by another process


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the same
    process; '' where /proc is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start(pid)}"


class Store:
    """The workspace records as a job's process reads and writes them: the SQLite file itself, on this machine.

    A job on another machine (the Ray executor) never opens the file: SQLite's write-ahead log works only between
    processes of one machine. It talks to a ``Store`` living next to the file instead (``core.jobs.executors.ray``),
    through the same methods.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def job(self, job_id: str) -> dict[str, Any] | None:
        with db.connect(path=self.path) as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row is not None else None

    def take(self, job_id: str, worker: str) -> bool:
        """Record ``worker`` as the job's process, if the job is still waiting for one (not cancelled meanwhile);
        its first heartbeat."""
        with db.connect(write=True, path=self.path) as con:
            return bool(con.execute("UPDATE jobs SET worker = ?, heartbeat = ? WHERE id = ? AND state = ?",
                                    (worker, time.time(), job_id, STARTING)).rowcount)  # fmt: skip

    def beat(self, job_id: str) -> None:
        """The job's process is alive now (the time is this machine's: the one the dispatcher compares with)."""
        with db.connect(write=True, path=self.path) as con:
            con.execute(f"UPDATE jobs SET heartbeat = ? WHERE id = ? AND state NOT IN {FINISHED_SQL}",
                        (time.time(), job_id))  # fmt: skip

    def stop_asked(self, job_id: str) -> bool:
        """Whether a stop was asked for; the first time one is seen, the records say it was taken up (stop = 2), so
        that the dispatcher leaves the process to wind down (save the model so far) instead of ending it."""
        with db.connect(path=self.path) as con:
            row = con.execute("SELECT stop FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is not None and row["stop"] == 1:
            with db.connect(write=True, path=self.path) as con:
                con.execute("UPDATE jobs SET stop = 2 WHERE id = ? AND stop = 1", (job_id,))
        return row is None or bool(row["stop"])

    def write(self, job_id: str, fields: dict[str, Any], points: list[tuple[str, str]]) -> None:
        """Record a job's progress: ``fields`` of PROGRESS_FIELDS (nothing else, so no key becomes SQL) and
        points of its charts."""
        unknown = set(fields) - PROGRESS_FIELDS
        if unknown:
            raise ValueError(f"Only progress fields may be written ({', '.join(sorted(PROGRESS_FIELDS))}). "
                             f"Received: {', '.join(sorted(map(repr, unknown)))}")  # fmt: skip
        with db.connect(write=True, path=self.path) as con:
            if fields:
                cols = ", ".join(f"{k} = ?" for k in fields)
                con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))
            con.executemany(
                "INSERT INTO job_points (job_id, kind, data) VALUES (?, ?, ?)",
                [(job_id, kind, data) for kind, data in points],
            )

    def finish(self, job_id: str, kind: str, state: str, error: str | None, metrics: dict, result: Any) -> None:
        """Record the job's end, unless it has one already (its process was taken for gone and ended)."""
        with db.connect(write=True, path=self.path) as con:
            ended = con.execute(
                "UPDATE jobs SET state = ?, error = ?, metrics = ?, result = ?, finished = ? "
                f"WHERE id = ? AND state NOT IN {FINISHED_SQL}",
                (state, error, json.dumps(metrics), json.dumps(result) if result is not None else None, time.time(),
                 job_id),
            ).rowcount  # fmt: skip
            if ended and state in (COMPLETED, STOPPED) and kind == TRAIN:
                runs.index_run(con, job_id)


def as_store(store: Store | Path | str) -> Store:
    return store if isinstance(store, Store) else Store(Path(store))


class StopFlag(threading.Event):
    """A stop for one job: set here, or asked for in the records by any process (seen within STOP_POLL_SECONDS)."""

    def __init__(self, store: Store | Path, job_id: str):
        super().__init__()
        self.store, self.job_id, self._checked = as_store(store), job_id, 0.0

    def is_set(self) -> bool:
        if super().is_set():
            return True
        now = time.monotonic()
        if now - self._checked >= STOP_POLL_SECONDS:
            self._checked = now
            if self.store.stop_asked(self.job_id):
                self.set()
        return super().is_set()


class Heartbeat:
    """A thread of the job's process that tells the records it is alive, several times per silence limit and at
    least every 5 s, whatever the job is doing (a long step without progress, a model being saved)."""

    def __init__(self, store: Store, job_id: str):
        self.store, self.job_id = store, job_id
        self.interval = max(0.1, min(5.0, settings.current().heartbeat_seconds / 4))
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.store.beat(self.job_id)
            except Exception:  # the records did not answer this once: the next beat tries again
                log.warning("job %s: no heartbeat could be recorded", self.job_id, exc_info=True)


class JobWriter:
    """Progress of one job into the records, throttled: training events and task reports go through here."""

    def __init__(self, store: Store | Path, job_id: str):
        self.store, self.job_id = as_store(store), job_id
        self._fields: dict[str, Any] = {}
        self._points: list[tuple[str, str]] = []
        self._flushed = 0.0
        self._stage, self._stage_start = "", 0.0
        self._lock = threading.Lock()

    def set(self, force: bool = False, **fields: Any) -> None:
        with self._lock:
            self._fields.update(fields)
        self.flush(force)

    def point(self, kind: str, data: dict) -> None:
        with self._lock:
            self._points.append((kind, json.dumps(data)))

    def flush(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._flushed < FLUSH_SECONDS:
            return
        with self._lock:
            fields, points = self._fields, self._points
            self._fields, self._points = {}, []
        self._flushed = now
        if fields or points:
            self.store.write(self.job_id, fields, points)

    def on_event(self, ev) -> None:
        """Listener for ``core.train.training.train``."""
        fields = dict(state=ev.stage, done=ev.done, total=ev.total, eta=ev.eta, epoch=ev.epoch, epochs=ev.epochs,
                      batch=ev.batch, batches=ev.batches)  # fmt: skip
        force = ev.kind in ("plan", "epoch") or ev.stage != self._stage
        self._stage = ev.stage
        if ev.kind == "plan":
            fields["path_reason"] = ev.message
            if ev.phase == 2:
                fields["phase2_start"] = ev.epoch
        if ev.kind == "batch" and "loss" in ev.logs:
            self.point("batch", {"step": ev.done, "epoch": ev.epoch, "loss": ev.logs["loss"]})
        elif ev.kind == "epoch":
            self.point("epoch", {"epoch": ev.epoch, **ev.logs, **({"phase": ev.phase} if ev.phase else {})})
        self.set(force, **fields)

    def report(self, stage: str, done: int, total: int) -> None:
        """A task's progress: counts and an ETA from the time this stage has taken so far."""
        if stage != self._stage:
            self._stage, self._stage_start = stage, time.monotonic()
        elapsed = time.monotonic() - self._stage_start
        eta = elapsed / done * (total - done) if done else None
        self.set(done == total, state=WORKING, stage=stage, done=done, total=total, eta=eta)
