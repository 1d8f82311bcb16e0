"""Jobs whose process has gone, gone silent or ignored a stop: found, ended and recorded in words.

    recover(db_path)        # processes that died (a server restart, a crash): their jobs interrupted or failed
    silent(db_path, end)    # no heartbeat for settings.heartbeat_seconds: failed, and their process ended
    unstopped(db_path)      # a stop not taken up within settings.stop_grace_seconds: (job, worker, seconds)
    prune(db_path)          # finished jobs older than PRUNE_DAYS (a training's only with its run)

A training's run folder without its marker holds nothing usable and is removed; a complete one stays, and its job
says where it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from core import settings
from core.jobs import kinds
from core.jobs.kinds import TRAIN
from core.jobs.states import (
    FAILED,
    FINISHED,
    FINISHED_SQL,
    INTERRUPTED,
    QUEUED,
    RAY_PREFIX,
    SERVER_STOPPED,
    THREAD_PREFIX,
)  # fmt: skip
from core.jobs.store import process_start
from core.util import text
from core.workspace import db, runs

log = logging.getLogger(__name__)
PRUNE_DAYS = 30  # finished jobs older than this are removed when the registry starts (a training's with its run)


def worker_alive(worker: str | None, ray_alive: Callable[[str], bool] | None = None) -> bool:
    """Whether the process named by ``worker_id`` still runs. A process on another machine counts as alive, and
    so does a job on a Ray cluster when ``ray_alive(job_id)`` (the Ray executor's, once connected) is not given."""
    if not worker:
        return False
    if worker.startswith(RAY_PREFIX):
        return ray_alive is None or ray_alive(worker.removeprefix(RAY_PREFIX).split("@", 1)[0])
    host, pid, start = worker.removeprefix(THREAD_PREFIX).rsplit(":", 2)
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return process_start(int(pid)) == start


def fail(path: Path, job_id: str, error: str) -> None:
    """A job that could not be started at all: failed, with the reason in words."""
    with db.connect(write=True, path=path) as con:
        con.execute(f"UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ? AND state NOT IN {FINISHED_SQL}",
                    (FAILED, time.time(), error, job_id))  # fmt: skip


def exit_words(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        oom = ", as the system does when it runs out of memory" if -code == signal.SIGKILL else ""
        return f"it was killed by {name}{oom}"
    return f"it exited with status {code}"


def ended_unexpectedly(path: Path, job_id: str, how: str) -> None:
    """Mark a job whose process ended without recording its end as failed (or interrupted: see ``_ending``),
    saying how it ended."""
    with db.connect(write=True, path=path) as con:
        row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row["state"] in FINISHED:
            return
        _record_end(con, row, *_ending(row, how))
    _remove_partial(job_id, row["kind"])


def _ending(row, how: str | None) -> tuple[str, str]:
    """How a job whose process ended without recording its end is recorded: its state and a sentence.

    A training whose run was saved whole is *interrupted* and says where its run is (the process died between its
    last file and its end); so is one that ran in a thread of a server that stopped, and one whose stop was not
    taken up in time and whose process was ended for it; any other is *failed*.
    """
    what = kinds.label(row["kind"])
    ended = f"ended unexpectedly: {how}" if how else "ended unexpectedly"
    if row["kind"] == TRAIN and runs.find_run(row["id"]) is not None:
        return INTERRUPTED, (f"The {what} process {ended}, after its model was saved but before it recorded its "
                             f"end: the run {row['id']} is complete, on the Runs page.")  # fmt: skip
    if (row["worker"] or "").startswith(THREAD_PREFIX):  # it ran inside a web server that has stopped
        return INTERRUPTED, SERVER_STOPPED
    grace = settings.current().stop_grace_seconds
    if row["stop"] == 1 and row["stop_time"] and time.time() - row["stop_time"] >= grace:
        return INTERRUPTED, (f"Stopped by ending its process: the {what} did not take up the stop within {grace:g} s. "
                             "Nothing of it was saved.")  # fmt: skip
    return FAILED, f"The {what} process {ended}. Nothing of it was saved."


def _record_end(con, row, state: str, error: str) -> None:
    con.execute(f"UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ? AND state NOT IN {FINISHED_SQL}",
                (state, time.time(), error, row["id"]))  # fmt: skip
    if state == INTERRUPTED and row["kind"] == TRAIN:
        runs.index_run(con, row["id"])  # a run saved whole is listed (a missing one is not)


def _remove_partial(job_id: str, kind: str) -> None:
    """A training's run folder without its marker holds nothing usable: remove it; a complete run stays."""
    folder = runs.runs_dir() / job_id
    if kind == TRAIN and folder.is_dir() and not runs.is_run(folder):
        shutil.rmtree(folder, ignore_errors=True)


def _starting_on_ray(row) -> bool:
    """A job handed to a Ray cluster moments ago, whose actor has not taken it yet (nor, perhaps, reached the
    cluster's list of names): not to be taken for gone. One that no actor takes within a minute is."""
    worker = row["worker"] or ""
    return worker.startswith(RAY_PREFIX) and "@" not in worker and time.time() - (row["started"] or 0) < 60


def _running_rows(con, where: str = "1", args: tuple = ()) -> list:
    return con.execute(f"SELECT * FROM jobs WHERE state NOT IN {FINISHED_SQL} AND state != ? AND {where}",
                       (QUEUED, *args)).fetchall()  # fmt: skip


def recover(path: Path | None = None, ray_alive: Callable[[str], bool] | None = None) -> list[str]:
    """Mark jobs whose process has gone as interrupted (a server restart, a crash); returns their ids.

    A training's run folder without its marker holds nothing usable and is removed; a complete one stays.
    """
    path = path or db.db_path()
    if not path.exists():
        return []
    with db.connect(path=path) as con:  # read first: the write lock is taken only when there is something to do
        gone = [r for r in _running_rows(con) if not _starting_on_ray(r) and not worker_alive(r["worker"], ray_alive)]
    if not gone:
        return []
    with db.connect(write=True, path=path) as con:
        for r in gone:
            _record_end(con, r, *_ending(r, None))
    for r in gone:
        _remove_partial(r["id"], r["kind"])
    return [r["id"] for r in gone]


def silent(path: Path, end: Callable[[str, str], None] | None = None) -> list[str]:
    """Mark running jobs whose process has not said it is alive for the heartbeat limit
    (``settings.heartbeat_seconds``) as failed, in words,
    and end that process (``end(job_id, worker)``), which may be stuck rather than gone; returns their ids. Their
    slots are free again."""
    now = time.time()
    with db.connect(path=path) as con:
        rows = _running_rows(con, "heartbeat < ?", (now - settings.current().heartbeat_seconds,))
    marked = []
    for r in rows:
        again = "restart it from the Jobs page" if r["kind"] == TRAIN else f"start the {kinds.label(r['kind'])} again"
        ago = text.human_time(now - r["heartbeat"])
        error = f"The worker running this job stopped answering (last heard from {ago} ago): {again}."
        try:
            with db.connect(write=True, path=path) as con:
                if not con.execute(f"UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ? AND heartbeat = ? "
                                   f"AND state NOT IN {FINISHED_SQL}",
                                   (FAILED, now, error, r["id"], r["heartbeat"])).rowcount:  # fmt: skip
                    continue  # it spoke (or ended) in the meantime
        except db.WorkspaceError:  # a process frozen inside a write holds the lock: ended first, marked next time
            if end is not None:
                end(r["id"], r["worker"] or "")
            raise
        log.warning("job %s: its worker %s has been silent since %s", r["id"], r["worker"], r["heartbeat"])
        if end is not None:
            end(r["id"], r["worker"] or "")
        _remove_partial(r["id"], r["kind"])
        marked.append(r["id"])
    return marked


def unstopped(path: Path) -> list[tuple[str, str, float]]:
    """Running jobs asked to stop more than the stop's grace (``settings.stop_grace_seconds``) ago whose process has
    not taken the stop up:
    (job id, its worker, seconds since the stop). Only jobs whose own process has taken them (and beaten once): the
    worker named before is the dispatcher's."""
    now = time.time()
    with db.connect(path=path) as con:
        rows = _running_rows(
            con, "stop = 1 AND stop_time < ? AND heartbeat IS NOT NULL", (now - settings.current().stop_grace_seconds,)
        )
    return [(r["id"], r["worker"] or "", now - r["stop_time"]) for r in rows]


def prune(path: Path, days: float = PRUNE_DAYS) -> int:
    """Remove finished jobs older than ``days`` and their chart points, except a training's whose run is still
    there; returns how many."""
    before = time.time() - days * 24 * 3600
    with db.connect(path=path) as con:
        rows = con.execute(f"SELECT id, kind FROM jobs WHERE state IN {FINISHED_SQL} AND "
                           "coalesce(finished, created) < ?", (before,)).fetchall()  # fmt: skip
    old = [(r["id"],) for r in rows if r["kind"] != TRAIN or not (runs.runs_dir() / r["id"]).is_dir()]
    if old:
        with db.connect(write=True, path=path) as con:
            con.executemany("DELETE FROM job_points WHERE job_id = ?", old)
            con.executemany("DELETE FROM jobs WHERE id = ?", old)
    return len(old)
