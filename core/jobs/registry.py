"""Jobs: heavy work (training, the learning-rate test, evaluation, the speed test, label checks, exports, duplicate
searches) queued and followed in the workspace database.

    job = registry().submit(dataset, config, owner="ann@example.com")   # dataset: a saved one (dataset.id)
    registry().get(job.id)               # a JobSnapshot: state, progress, epochs so far — from any tab or process
    registry().stop(job.id, user)        # honoured within one batch; the model so far is saved
    registry().submit_task(LR_FIND, {"config": config.to_dict()}, owner=..., dataset=dataset)
    registry().submit_task(DUPLICATES, {}, owner=..., dataset=dataset, once=True)  # or the one queued on it already
    registry().latest(DUPLICATES, dataset)   # the newest such job on this version of the dataset, or None
    registry().restart(job.id, user)     # an interrupted or failed job, queued again with the same settings
    registry().retrain(run.id, user)     # the run's settings again, on the newest version of its saved dataset

A job is data, not a closure: its kind (``core.jobs.kinds``), its settings (JSON) and its saved dataset's id are a
row of the ``jobs`` table, so any process can start it and a restarted server finds it again. Every session reads
jobs and their progress from the database; nothing about a job lives only in one process's memory.

This process's dispatcher starts queued jobs, oldest first, while fewer than ``max_running`` run
(``settings.max_jobs``, default 1: 2 CPU cores are not shared well), on the executor it was given
(``core.jobs.executors``: a worker process of its own by default, a Ray cluster, or a thread). The job's process
writes its progress through a ``Store`` and checks for a stop after every batch (``core.jobs.store``); the model
files of a run appear only once complete, so nothing half-made is ever listed. The job id of a training is also its
run folder's name.

Every few seconds the dispatcher looks for faults (``core.jobs.recovery``): a process that has gone, one silent for
``settings.heartbeat_seconds`` (ended and failed in words), one that has not taken up a stop within
``settings.stop_grace_seconds`` (SIGTERM, then SIGKILL ``KILL_AFTER_SECONDS`` later; a Ray job's actor is killed).
Finished jobs older than ``recovery.PRUNE_DAYS`` are removed when the registry starts, except a training's whose run
is still there; ``core.workspace.runs.delete_run`` removes a training's rows with its run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from core import settings
from core.config import TrainConfig
from core.data.dataset import Dataset
from core.jobs.executors import Executor, make
from core.jobs.kinds import KINDS, TRAIN
from core.jobs.recovery import prune, recover, silent, unstopped
from core.jobs.runner import open_dataset, pinned_version
from core.jobs.states import (
    CANCELLED,
    FINISHED_SQL,
    LINE,
    QUEUED,
    RECENT_SECONDS,
    STARTING,
    JobSnapshot,
    snapshot,
)  # fmt: skip
from core.util.errors import UserError
from core.workspace import access, db, runs

log = logging.getLogger(__name__)
KILL_AFTER_SECONDS = 5.0  # a process still there this long after SIGTERM gets SIGKILL


class JobRegistry:
    """This process's view of the jobs in the workspace database, and its dispatcher of queued jobs."""

    def __init__(
        self,
        max_running: int | None = None,
        dispatch: bool = True,
        executor: str | Executor | None = None,
        warm: bool | None = None,
        ray_address: str | None = None,
    ):
        """``dispatch=False``: read and change jobs only, never start one (the CLI, whose process soon ends).
        ``executor``: where jobs run — an ``Executor``, or its name (``process``, ``ray``, ``thread``: see
        ``core.jobs.executors``; default the settings'). ``warm`` and ``ray_address`` are the named executor's
        (default the settings')."""
        s = settings.current()
        self.max_running = max_running or s.max_jobs
        self.executor = executor if isinstance(executor, Executor) else make(executor, s, warm, ray_address)
        self._last_check = 0.0
        self.dispatch = dispatch
        self._closed = False
        self._cond = threading.Condition()
        self._recovered: set[Path] = set()
        self._dispatcher: threading.Thread | None = None

    # -- asking for work

    def submit(self, dataset: Dataset, config: TrainConfig, owner: str = "", name: str | None = None) -> JobSnapshot:
        """Queue a training run; it starts as soon as a slot is free. Options are checked now, not later.

        A saved dataset's run is pinned to the version it was given (``dataset.version``): a version committed while
        it waits in the queue does not change what it trains on."""
        if getattr(dataset, "version", 0):
            config = dataclasses.replace(config, dataset_version=dataset.version)
        config.validate()
        job_id = runs.new_run_id(name or dataset.report.source)
        return self._insert(job_id, TRAIN, {"config": config.to_dict()}, owner, dataset)

    def submit_task(
        self, kind: str, params: dict[str, Any], owner: str = "", dataset: Dataset | None = None, once: bool = False
    ) -> JobSnapshot:
        """Queue other heavy work (the learning-rate test, an evaluation, the speed probe) in the same slots as
        training. ``once``: a job of this kind already queued or running on this version of ``dataset`` is returned
        instead of a new one (decided in the same write as the insert: two tabs asking at once get one job)."""
        if kind not in KINDS or kind == TRAIN:
            raise ValueError(f"kind must be one of {', '.join(repr(k) for k in KINDS if k != TRAIN)}. "
                             f"Received: kind={kind!r}")  # fmt: skip
        if verb := KINDS[kind].changes_run:  # it replaces a file of the run: asked now, again when the work writes it
            info = runs.find_run(str(params.get("run", "")))
            if info is None:
                raise UserError(f"There is no run {params.get('run')!r} on this server.")
            access.check(owner, info.owner, f"{verb} the run {info.id}")
        job_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        return self._insert(job_id, kind, params, owner, dataset, once)

    def _insert(self, job_id, kind, params, owner, dataset: Dataset | None, once: bool = False) -> JobSnapshot:
        if dataset is not None and not getattr(dataset, "id", ""):
            raise ValueError(
                "A job's dataset must be a saved one (core.workspace.datasets), so any process can open it."
            )
        if dataset is not None and getattr(dataset, "version", 0):
            params = {**params, "dataset_version": dataset.version}  # the job opens the version it was given
        with db.connect(write=True) as con:
            same = _on_dataset(con, kind, dataset, unfinished=True) if once and dataset is not None else None
            if same is None:
                con.execute(
                    "INSERT INTO jobs (id, kind, state, owner, dataset_id, dataset_name, params, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, kind, QUEUED, owner, dataset.id if dataset else None,
                     dataset.title if dataset else "", json.dumps(params), time.time()),
                )  # fmt: skip
        if same is not None:
            return self.get(same["id"])
        self._wake()
        return self.get(job_id)

    def restart(self, job_id: str, user: str = access.GUEST) -> JobSnapshot:
        """Queue an interrupted (or failed, stopped) job again with the same settings; returns the new job.

        Only the job's owner or an admin may (core.workspace.access); the new job is the original owner's (a guest's job
        becomes the restarting user's).
        """
        old = self.get(job_id)
        if old is None:
            raise UserError(f"There is no job {job_id} on this server.")
        access.check(user, old.owner, f"restart the {old.label} {job_id}")
        if not old.finished:
            raise UserError(f"The {old.label} {job_id} has not finished; there is nothing to restart.")
        dataset = open_dataset(old.dataset_id, version=pinned_version(old.params))
        if old.kind == TRAIN:
            new = self.submit(dataset, old.config, owner=old.owner or user, name=dataset.report.source)
        else:
            new = self.submit_task(old.kind, old.params, owner=old.owner or user, dataset=dataset)
        with db.connect(write=True) as con:
            con.execute("UPDATE jobs SET restarted_as = ? WHERE id = ?", (new.id, job_id))
        return new

    def retrain(self, run_id: str, user: str = access.GUEST, newest: bool = True) -> JobSnapshot:
        """Train the run's settings again, as a new run of ``user``'s: on the newest version of its saved dataset
        (``newest=False``: on the version it trained on). Only the run's owner or an admin may (anyone, for a run
        made without sign-in).

        Raises:
            UserError: no such run, it was not trained on a saved dataset, the dataset was deleted, or NotAllowed.
        """
        dataset, config = retrain_inputs(run_id, user, newest)
        return self.submit(dataset, config, owner=user, name=dataset.report.source)

    # -- reading

    def get(self, job_id: str, points: bool = True, since: int = 0) -> JobSnapshot | None:
        """The job now, with its chart points (``points=False``: none); ``since``: only the points after that
        ``last_seq`` of an earlier snapshot (a live view adds them to those it has)."""
        self._ensure_started()
        with db.connect() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            pts = None
            if points:
                pts = con.execute("SELECT seq, kind, data FROM job_points WHERE job_id = ? AND seq > ? ORDER BY seq",
                                  (job_id, since)).fetchall()  # fmt: skip
        return snapshot(row, pts, since)

    def latest(self, kind: str, dataset: Dataset) -> JobSnapshot | None:
        """The newest job of ``kind`` on this version of the saved ``dataset``, finished or not (None: none)."""
        self._ensure_started()
        with db.connect() as con:
            row = _on_dataset(con, kind, dataset)
        return snapshot(row) if row is not None else None

    def jobs(self, recent: float | None = RECENT_SECONDS) -> list[JobSnapshot]:
        """Queued and running jobs, and those finished within ``recent`` seconds (all when None); newest first."""
        self._ensure_started()
        since = 0.0 if recent is None else time.time() - recent
        with db.connect() as con:
            rows = con.execute(
                f"SELECT * FROM jobs WHERE state NOT IN {FINISHED_SQL} OR coalesce(finished, created) >= ? "
                "ORDER BY created DESC, rowid DESC",
                (since,),
            ).fetchall()
        return [snapshot(r) for r in rows]

    def ahead(self, job_id: str) -> int:
        """Jobs that must start or finish before this queued one starts: those ahead in line, and those running
        now when every slot is taken. 0 once it has started."""
        with db.connect() as con:
            row = con.execute(f"SELECT state, {LINE} AS line, created, rowid FROM jobs WHERE id = ?",
                              (job_id,)).fetchone()  # fmt: skip
            if row is None or row["state"] != QUEUED:
                return 0
            before = con.execute(
                f"SELECT count(*) FROM jobs WHERE state = ? AND ({LINE}, created, rowid) < (?, ?, ?)",
                (QUEUED, row["line"], row["created"], row["rowid"]),
            ).fetchone()[0]
            running = self._running_count(con)
        return before + (running if running >= self.max_running else 0)

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        """Block until the job has finished (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = self.get(job_id, points=False)
            if snap is None:
                raise KeyError(job_id)
            if snap.finished:
                return self.get(job_id)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {snap.state}")
            time.sleep(0.1)

    # -- changing

    def stop(self, job_id: str, user: str = access.GUEST) -> None:
        """Ask a job to stop (a queued one is cancelled at once). Only its owner or an admin may."""
        snap = self.get(job_id, points=False)
        if snap is None or snap.finished:
            return
        access.check(user, snap.owner, f"stop the {snap.label} {job_id}")
        with db.connect(write=True) as con:
            # stop = 1 until the job's process takes it up (2); the time starts the grace before it is ended
            con.execute("UPDATE jobs SET stop = max(stop, 1), stop_time = coalesce(stop_time, ?) WHERE id = ?",
                        (time.time(), job_id))  # fmt: skip
            con.execute(
                "UPDATE jobs SET state = ?, finished = ? WHERE id = ? AND state = ?",
                (CANCELLED, time.time(), job_id, QUEUED),
            )
        self.executor.stop(job_id)

    # -- dispatching

    def _wake(self) -> None:
        self._ensure_started()
        with self._cond:
            self._cond.notify_all()

    def _ensure_started(self) -> None:
        path = db.db_path()
        if path not in self._recovered:
            with self._cond:
                if path not in self._recovered:
                    recover(path, self.executor.alive())
                    try:
                        prune(path)
                    except UserError:  # housekeeping: the jobs can be read and run without it
                        log.warning("old jobs could not be pruned", exc_info=True)
                    self._recovered.add(path)
        if self.dispatch and not self._closed and (self._dispatcher is None or not self._dispatcher.is_alive()):
            with self._cond:
                if self._dispatcher is None or not self._dispatcher.is_alive():
                    self._dispatcher = threading.Thread(target=self._dispatch, name="job-dispatcher", daemon=True)
                    self._dispatcher.start()

    @staticmethod
    def _running_count(con) -> int:
        return con.execute(f"SELECT count(*) FROM jobs WHERE state NOT IN {FINISHED_SQL} AND state != ?",
                           (QUEUED,)).fetchone()[0]  # fmt: skip

    def _claim(self, path: Path) -> str | None:
        """Take the oldest queued job when a slot is free (in one write transaction: two processes never take
        the same job, nor more than the slots)."""
        with db.connect(write=True, path=path) as con:
            if self._running_count(con) >= self.max_running:
                return None
            row = con.execute(f"SELECT id FROM jobs WHERE state = ? ORDER BY {LINE}, created, rowid LIMIT 1",
                              (QUEUED,)).fetchone()  # fmt: skip
            if row is None:
                return None
            # A job on a thread of this process is marked as such: if this process goes, the job was interrupted
            # with it; a worker process records its own id as it starts (until then the dispatcher's stands in).
            worker = self.executor.worker_label(row["id"])
            con.execute("UPDATE jobs SET state = ?, started = ?, worker = ? WHERE id = ?",
                        (STARTING, time.time(), worker, row["id"]))  # fmt: skip
            return row["id"]

    def close(self) -> None:
        """Start no more jobs (those running go on to their end); a waiting warm worker exits."""
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        self.executor.close()

    def _dispatch(self) -> None:
        while not self._closed:
            path = db.db_path()
            try:
                job_id = self._claim(path) if path.exists() else None
            except UserError:
                log.warning("the workspace database cannot be read; retrying", exc_info=True)
                job_id = None
            if job_id is None and time.monotonic() - self._last_check > check_seconds() and path.exists():
                self._last_check = time.monotonic()
                self._check(path)
            if job_id is None:
                if not self._closed:
                    self.executor.idle()
                with self._cond:
                    if not self._closed:
                        self._cond.wait(1.0)  # woken by a submit or a finish; one queued elsewhere waits ≤1 s
                continue
            self.executor.start(path, job_id, self._wake)

    def _check(self, path: Path) -> None:
        """Look for jobs whose process died, went silent, or has not taken up a stop (see the module's text)."""
        try:
            recover(path, self.executor.alive())  # a worker of an earlier server that died since: say so
            silent(path, end=lambda job_id, worker: self.executor.end(job_id, worker, signal.SIGKILL))
            grace = settings.current().stop_grace_seconds
            for job_id, worker, waited in unstopped(path):
                late = waited >= grace + KILL_AFTER_SECONDS
                self.executor.end(job_id, worker, signal.SIGKILL if late else signal.SIGTERM)
        except UserError:
            log.warning("the workspace database cannot be read; its jobs are checked again later", exc_info=True)


def retrain_inputs(
    run: str | runs.RunInfo, user: str = access.GUEST, newest: bool = True
) -> tuple[Dataset, TrainConfig]:
    """The dataset and config that train ``run`` (an id in the runs folder, or a RunInfo) again
    (``JobRegistry.retrain`` queues them; the command line, ``python -m core retrain RUN --newest``, trains them in
    its own process): the run's config, on the newest version of its saved dataset (``newest=False``: the version it
    trained on), which the config then names. The exclusions are the dataset's own again, not the run's."""
    info = run if isinstance(run, runs.RunInfo) else runs.find_run(str(run))
    if info is None:
        raise UserError(f"There is no run {str(run)[:80]!r} on this server: `python -m core jobs --all` lists them.")
    access.check(user, info.owner, f"train the run {info.id} again")
    if not info.dataset_id:
        raise UserError(
            f"The run {info.id} was trained from a zip path, not a dataset saved on this server, so it has no "
            "versions; save the zip (`python -m core datasets add ZIP`) and train on its id."
        )
    dataset = open_dataset(info.dataset_id, version=None if newest else info.dataset_version)
    config = dataclasses.replace(info.config, dataset_version=dataset.version, exclude=())
    return dataset, config


def _on_dataset(con, kind: str, dataset: Dataset, unfinished: bool = False):
    """The newest row of a job of ``kind`` on ``dataset`` at its version (``unfinished``: queued or running only)."""
    rows = con.execute(
        "SELECT * FROM jobs WHERE kind = ? AND dataset_id = ?"
        + (f" AND state NOT IN {FINISHED_SQL}" if unfinished else "")
        + " ORDER BY created DESC, rowid DESC",
        (kind, dataset.id),
    )
    version = getattr(dataset, "version", 0) or None
    return next((r for r in rows if pinned_version(json.loads(r["params"])) == version), None)


def check_seconds() -> float:
    """How often the dispatcher looks for faults: several times within the shortest of its limits."""
    s = settings.current()
    return max(0.2, min(5.0, s.heartbeat_seconds / 4, s.stop_grace_seconds / 4))


_registry: JobRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> JobRegistry:
    """The one registry of this process."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = JobRegistry()
        return _registry
