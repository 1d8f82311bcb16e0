"""Jobs: heavy work (training, the learning-rate test, evaluation, the speed test) queued and followed in the workspace
database.

    job = registry().submit(dataset, config, owner="ann@example.com")   # dataset: a saved one (dataset.id)
    registry().get(job.id)               # a JobSnapshot: state, progress, epochs so far — from any tab or process
    registry().stop(job.id, user)        # honoured within one batch; the model so far is saved
    registry().submit_task(LR_FIND, {"config": config.to_dict()}, owner=..., dataset=dataset)
    registry().restart(job.id, user)     # an interrupted or failed job, queued again with the same settings

A job is data, not a closure: its kind, its settings (JSON) and its saved dataset's id are a row of the ``jobs``
table, so any process can start it and a restarted server finds it again. Every session reads jobs and their
progress from the database; nothing about a job lives only in one process's memory.

This process's dispatcher starts queued jobs, oldest first, while fewer than ``max_running`` run
(``$CLASSIFIER_MAX_JOBS``, default 1: 2 CPU cores are not shared well). Where a job runs is the *executor*:

* ``process`` (the default): a worker process of its own on this machine (``core.worker``), which outlives a
  restart of the web server and gives its memory back when it ends. One more waits ahead with TensorFlow loaded.
* ``ray`` (when ``$RAY_ADDRESS`` is set): an actor on a Ray cluster (``core.ray_jobs``).
* ``thread``: a thread of this process (tests with stand-ins).

The job's process writes its progress (at most every ``FLUSH_SECONDS``, at once for an epoch, a stage or the end)
through a ``Store`` and checks for a stop after every batch. A job whose process has gone is marked failed (or
*interrupted*, for a thread of a stopped server), saying how it ended; the model files of a run appear only once
complete, so nothing half-made is ever listed. The job id of a training is also its run folder's name.

Faults the dispatcher looks for every few seconds:

* Silence. A job's process says it is alive every few seconds (``Heartbeat``: a thread of its own, so a long step
  without progress still counts). One silent for ``$CLASSIFIER_HEARTBEAT_SECONDS`` (default 60) — a frozen
  process, a Ray machine that vanished — is ended, marked failed in words, and its slot goes to the next job.
* A stop not honoured. A job that has not taken up a stop within ``$CLASSIFIER_STOP_GRACE_SECONDS`` (default 30)
  has its process ended: SIGTERM, then SIGKILL ``KILL_AFTER_SECONDS`` later (a Ray job's actor is killed). It ends
  *interrupted*, saying so.
* A process that died after saving its run but before recording its end: the run is complete and kept, and the
  job ends *interrupted*, saying where the run is.

Finished jobs older than ``PRUNE_DAYS`` are removed when the registry starts, except a training's whose run is
still there (its charts are the run's); ``core.runs.delete_run`` removes a training's rows with its run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import access, db, runs
from core.config import TrainConfig
from core.dataset import Dataset
from core.errors import Cancelled, UserError

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent  # the project: where `python -m core.worker` is found
MAX_JOBS_ENV = "CLASSIFIER_MAX_JOBS"
EXECUTOR_ENV = "CLASSIFIER_EXECUTOR"
# Where a job runs: its own process on this machine (the default), a Ray cluster (``core.ray_jobs``), or a thread of
# the dispatching process (for tests that swap in stand-ins).
THREAD, PROCESS, RAY = "thread", "process", "ray"
EXECUTORS = (PROCESS, RAY, THREAD)
RAY_ADDRESS_ENV = "RAY_ADDRESS"
WARM_ENV = "CLASSIFIER_WARM_WORKER"  # "0": no worker waits with TensorFlow loaded (saves its memory while idle)
THREAD_PREFIX, RAY_PREFIX = "thread:", "ray:"
MAX_BATCH_POINTS = 5000  # per-batch losses drawn in the chart; more are thinned evenly when read
FLUSH_SECONDS = 0.5  # progress reaches the database at most this often (and at once for what matters)
STOP_POLL_SECONDS = 0.25  # how often a worker looks for a stop asked by another process
RECENT_SECONDS = 24 * 3600  # finished jobs shown in the jobs view
HEARTBEAT_ENV = "CLASSIFIER_HEARTBEAT_SECONDS"  # a job's process silent this long is taken for gone (default 60)
STOP_GRACE_ENV = "CLASSIFIER_STOP_GRACE_SECONDS"  # a stop not taken up within this has its process ended (30)
KILL_AFTER_SECONDS = 5.0  # a process still there this long after SIGTERM gets SIGKILL
PRUNE_DAYS = 30  # finished jobs older than this are removed when the registry starts (a training's with its run)
SERVER_STOPPED = "The server stopped while this job ran; nothing of it was saved."

TRAIN, LR_FIND, EVALUATE, SPEED = "train", "lr_find", "evaluate", "speed"  # kinds of job
LABEL_ISSUES = "label_issues"
EXPORT = "export"
QUEUED, STARTING, READING, FEATURES, TRAINING = "queued", "starting", "reading", "features", "training"
WORKING = "working"  # a task's state while it runs (its stage names what it does)
COMPLETED, STOPPED, FAILED, CANCELLED, INTERRUPTED = "completed", "stopped", "failed", "cancelled", "interrupted"
FINISHED = (COMPLETED, STOPPED, FAILED, CANCELLED, INTERRUPTED)
KIND_NAMES = {TRAIN: "training", LR_FIND: "learning-rate test", EVALUATE: "evaluation", SPEED: "speed test",
              LABEL_ISSUES: "label-error search", EXPORT: "export"}  # fmt: skip
# The columns of a job a worker reports progress in (Store.write); the rest are set by the registry's own statements.
PROGRESS_FIELDS = frozenset({"state", "stage", "done", "total", "eta", "epoch", "epochs", "batch", "batches",
                             "path_reason", "phase2_start"})  # fmt: skip
RUN_CHANGING = {EVALUATE: "evaluate", EXPORT: "export", LABEL_ISSUES: "check the labels of"}  # what they write
_FINISHED_SQL = "(" + ", ".join(f"'{s}'" for s in FINISHED) + ")"
# The order of the line: oldest first, but a speed test (for a time estimate) after the work people asked for.
_LINE = f"(kind = '{SPEED}')"


@dataclass(frozen=True)
class JobSnapshot:
    """A job as the database holds it now, for rendering."""

    id: str
    kind: str
    state: str
    owner: str
    dataset_id: str | None
    dataset: str  # the dataset's name
    params: dict[str, Any]
    created: float
    started: float | None
    ended: float | None
    elapsed: float
    done: int
    total: int
    stage: str  # what a task is doing now ("features", "testing", "classifying", ...)
    epoch: int
    epochs: int
    batch: int
    batches: int
    eta: float | None
    metrics: dict[str, Any]
    error: str | None
    path_reason: str
    phase2_start: int | None
    stop_asked: bool
    restarted_as: str | None
    worker: str = ""  # the process running it (core.jobs.worker_id), "ray:<job>@..." on a Ray cluster
    result: Any = None
    epoch_logs: list[dict[str, float]] = field(default_factory=list)
    batch_losses: list[dict[str, float]] = field(default_factory=list)
    last_seq: int = 0  # the newest of its chart points read (``JobRegistry.get(since=...)`` reads only newer ones)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def stopping(self) -> bool:
        """A stop was asked for and the job has not finished yet."""
        return self.stop_asked and not self.finished

    @property
    def running(self) -> bool:
        return self.state not in FINISHED and self.state != QUEUED

    @property
    def run_dir(self) -> Path:
        return runs.runs_dir() / self.id

    @property
    def config(self) -> TrainConfig | None:
        data = self.params.get("config")
        return TrainConfig.from_dict(data) if data else None

    @property
    def label(self) -> str:
        return KIND_NAMES.get(self.kind, self.kind)

    @property
    def machine(self) -> str:
        """The host name of the machine running it, once its process has said ('' before)."""
        who = self.worker.removeprefix(THREAD_PREFIX)
        if who.startswith(RAY_PREFIX):
            who = who.partition("@")[2]
        return who.rsplit(":", 2)[0] if who.count(":") >= 2 else ""


def thin(losses: list[dict[str, float]]) -> list[dict[str, float]]:
    """At most MAX_BATCH_POINTS of a chart's per-batch losses, evenly spread."""
    if len(losses) <= MAX_BATCH_POINTS:
        return losses
    return losses[:: -(-len(losses) // MAX_BATCH_POINTS)]


def _snapshot(row, points: list | None = None, since: int = 0) -> JobSnapshot:
    now = row["finished"] or time.time()
    epoch_logs, batch_losses, last_seq = [], [], since
    for p in points or ():
        (epoch_logs if p["kind"] == "epoch" else batch_losses).append(json.loads(p["data"]))
        last_seq = max(last_seq, p["seq"])
    batch_losses = thin(batch_losses)
    params = json.loads(row["params"])
    return JobSnapshot(
        id=row["id"], kind=row["kind"], state=row["state"], owner=row["owner"], dataset_id=row["dataset_id"],
        dataset=row["dataset_name"], params=params, created=row["created"], started=row["started"],
        ended=row["finished"], elapsed=(now - row["started"]) if row["started"] else 0.0, done=row["done"],
        total=row["total"], stage=row["stage"], epoch=row["epoch"],
        epochs=row["epochs"] or (TrainConfig.from_dict(params["config"]).total_epochs if "config" in params else 0),
        batch=row["batch"], batches=row["batches"], eta=row["eta"], metrics=json.loads(row["metrics"]),
        error=row["error"], path_reason=row["path_reason"], phase2_start=row["phase2_start"],
        stop_asked=bool(row["stop"]), restarted_as=row["restarted_as"], worker=row["worker"] or "",
        result=json.loads(row["result"]) if row["result"] else None, epoch_logs=epoch_logs,
        batch_losses=batch_losses, last_seq=last_seq,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- the worker side


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the same
    process; '' where /proc is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


# How this process learns whether a job on a Ray cluster still runs (set once it is connected to one).
ray_alive: Any = None


def worker_alive(worker: str | None) -> bool:
    """Whether the process named by ``worker_id`` still runs. A process on another machine counts as alive, and
    so does a job on a Ray cluster that this process is not connected to."""
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
    return _process_start(int(pid)) == start


class Store:
    """The workspace records as a job's process reads and writes them: the SQLite file itself, on this machine.

    A job on another machine (the Ray executor) never opens the file: SQLite's write-ahead log works only between
    processes of one machine. It talks to a ``Store`` living next to the file instead (``core.ray_jobs``), through
    the same methods.
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
            con.execute(f"UPDATE jobs SET heartbeat = ? WHERE id = ? AND state NOT IN {_FINISHED_SQL}",
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
                f"WHERE id = ? AND state NOT IN {_FINISHED_SQL}",
                (state, error, json.dumps(metrics), json.dumps(result) if result is not None else None, time.time(),
                 job_id),
            ).rowcount  # fmt: skip
            if ended and state in (COMPLETED, STOPPED) and kind == TRAIN:
                runs.index_run(con, job_id)


def _store(store: Store | Path | str) -> Store:
    return store if isinstance(store, Store) else Store(Path(store))


class StopFlag(threading.Event):
    """A stop for one job: set here, or asked for in the records by any process (seen within STOP_POLL_SECONDS)."""

    def __init__(self, store: Store | Path, job_id: str):
        super().__init__()
        self.store, self.job_id, self._checked = _store(store), job_id, 0.0

    def is_set(self) -> bool:
        if super().is_set():
            return True
        now = time.monotonic()
        if now - self._checked >= STOP_POLL_SECONDS:
            self._checked = now
            if self.store.stop_asked(self.job_id):
                self.set()
        return super().is_set()


def heartbeat_seconds() -> float:
    """How long a running job's process may stay silent before it is taken for gone."""
    return float(os.environ.get(HEARTBEAT_ENV) or 60)


def stop_grace_seconds() -> float:
    """How long a running job has to take up a stop before its process is ended."""
    return float(os.environ.get(STOP_GRACE_ENV) or 30)


class Heartbeat:
    """A thread of the job's process that tells the records it is alive, several times per silence limit and at
    least every 5 s, whatever the job is doing (a long step without progress, a model being saved)."""

    def __init__(self, store: Store, job_id: str):
        self.store, self.job_id = store, job_id
        self.interval = max(0.1, min(5.0, heartbeat_seconds() / 4))
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
        self.store, self.job_id = _store(store), job_id
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
        """Listener for ``core.training.train``."""
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


def _open_dataset(dataset_id: str | None, touch: bool = True) -> Dataset | None:
    if not dataset_id:
        return None
    from core.datasets import open_dataset

    return open_dataset(dataset_id, touch=touch)


def _work(kind: str, params: dict, dataset: Dataset | None, job_id: str, owner: str, writer, stop) -> tuple:
    """Do one job; returns (state, metrics, result)."""
    if kind == TRAIN:
        import core.training  # TensorFlow loads in the worker, never in a page's script run

        config = TrainConfig.from_dict(params["config"])
        out = runs.runs_dir() / job_id
        result = core.training.train(dataset, config, out, writer.on_event, stop, owner=owner)
        return result.status, result.metrics, None
    if kind == LR_FIND:
        import core.lrfind

        finding = core.lrfind.lr_find(
            dataset, TrainConfig.from_dict(params["config"]), progress=writer.report, stop=stop
        )
        return COMPLETED, {}, finding.to_dict()
    if kind == EVALUATE:
        from core.evaluate import evaluate_run

        def progress(done: int, total: int) -> None:
            if stop.is_set():
                raise Cancelled("Evaluation stopped; nothing was saved.")
            writer.report("classifying", done, total)

        run = runs.find_run(params["run"])
        if run is None:
            raise UserError(f"The run {params['run']} was deleted before it could be evaluated.")
        ev = evaluate_run(run.path, dataset, top_k=params.get("top_k", 3), progress=progress, user=owner)
        return COMPLETED, {"accuracy": ev.accuracy}, None
    if kind == LABEL_ISSUES:
        from core.label_issues import DEFAULT_FOLDS, find_label_issues

        def report(stage: str, done: int, total: int) -> None:
            if stop.is_set():
                raise Cancelled("The label-error search was stopped; nothing was saved.")
            writer.report(stage, done, total)

        run = runs.find_run(params["run"])
        if run is None:
            raise UserError(f"The run {params['run']} was deleted before its labels could be checked.")
        found = find_label_issues(
            run.path, dataset, folds=params.get("folds", DEFAULT_FOLDS), progress=report, user=owner
        )
        return COMPLETED, {"suspects": len(found.suspects), "images": found.images}, None
    if kind == EXPORT:
        from core.bundles import exports_dir
        from core.export import export_run

        def report(stage: str, done: int, total: int) -> None:
            if stop.is_set():
                raise Cancelled("The export was stopped; nothing was saved.")
            writer.report(stage, done, total)
            writer.flush()  # a format takes tens of seconds: show each one as it starts

        run = runs.find_run(params["run"])
        if run is None:
            raise UserError(f"The run {params['run']} was deleted before it could be exported.")
        bundle = export_run(run.path, exports_dir(run.path), params.get("formats") or None,
                            int8=bool(params.get("int8")), progress=report, user=owner)  # fmt: skip
        return COMPLETED, {"passed": bundle.passed, "bundle": str(bundle.path)}, None
    if kind == SPEED:
        import core.speed  # TensorFlow loads inside measure_speed, here in the worker

        def report(stage: str, done: int, total: int) -> None:
            writer.report(stage, done, total)
            writer.flush()  # a dozen batches of seconds each: every one shows at once, not at the next

        ips = core.speed.measure_speed(params["image_size"], params["precision"], images=params.get("images"),
                                       progress=report, stop=stop)  # fmt: skip
        return COMPLETED, {"images_per_second": round(ips, 3)}, None
    raise ValueError(f"Unknown job kind. Received: kind={kind!r}")


def run_job(
    store: Store | Path,
    job_id: str,
    stop: StopFlag | None = None,
    local: bool = True,
    figures: Callable[[], dict[str, Any]] | None = None,
) -> str:
    """Run a job already claimed by this process (state 'starting') to its end; returns its final state.

    Every outcome is written to the records: the result, a stop, a user's mistake in words, or a bug's type and
    message (its traceback goes to the log). Nothing escapes, so a caller's thread or process lives on.
    ``local=False``: this process is on another machine than the records (it never touches the database itself).
    ``figures()``: more of this process's figures for the job's metrics as it ends (a worker's peak memory).
    """
    store = _store(store)
    row = store.job(job_id)
    writer, stop = JobWriter(store, job_id), stop or StopFlag(store, job_id)
    state, error, metrics, result = FAILED, None, {}, None
    try:
        with Heartbeat(store, job_id):
            dataset = _open_dataset(row["dataset_id"], touch=local)
            state, metrics, result = _work(row["kind"], json.loads(row["params"]), dataset, job_id, row["owner"],
                                           writer, stop)  # fmt: skip
    except Cancelled:
        state = CANCELLED
    except UserError as exc:
        error = getattr(exc, "short", None) or str(exc)  # the page's words where a remedy is the CLI's
    except Exception as exc:  # a bug: keep the server alive, log the traceback, tell the user
        log.exception("job %s failed", job_id)
        error = f"The {KIND_NAMES.get(row['kind'], 'job')} failed unexpectedly: {type(exc).__name__}: {exc}"
    writer.flush()
    if figures is not None:
        metrics = {**(metrics or {}), **figures()}
    store.finish(job_id, row["kind"], state, error, metrics, result)
    return state


# ---------------------------------------------------------------------------------------------- the registry


class JobRegistry:
    """This process's view of the jobs in the workspace database, and its dispatcher of queued jobs."""

    def __init__(
        self,
        max_running: int | None = None,
        dispatch: bool = True,
        executor: str | None = None,
        warm: bool | None = None,
        ray_address: str | None = None,
    ):
        """``dispatch=False``: read and change jobs only, never start one (the CLI, whose process soon ends).
        ``executor``: ``process`` (each job in a worker process of its own), ``ray`` (each job on the Ray cluster
        at ``ray_address``) or ``thread`` (a thread of this process: for tests that swap in stand-ins); default
        ``$CLASSIFIER_EXECUTOR``, else ``ray`` when ``$RAY_ADDRESS`` is set, else ``process``.
        ``warm``: keep one worker process waiting with TensorFlow loaded (``process`` only; default on, off with
        ``CLASSIFIER_WARM_WORKER=0``)."""
        self.max_running = max_running or int(os.environ.get(MAX_JOBS_ENV) or 1)
        self.ray_address = ray_address or os.environ.get(RAY_ADDRESS_ENV) or None
        self.executor = executor or os.environ.get(EXECUTOR_ENV) or (RAY if self.ray_address else PROCESS)
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}. "
                             f"Received: executor={self.executor!r}")  # fmt: skip
        if self.executor == RAY and not self.ray_address:
            raise ValueError("The Ray executor needs the cluster's address: set RAY_ADDRESS (README: 'Ray cluster').")
        self.warm = (os.environ.get(WARM_ENV, "1") != "0") if warm is None else warm
        self._warm: subprocess.Popen | None = None
        self._warm_failed = 0.0  # when one last ended before taking a job (it is not started again for a while)
        self._ray = None  # core.ray_jobs.RayExecutor, once connected
        self._ray_error = ""
        self._last_check = 0.0
        self.dispatch = dispatch
        self._closed = False
        self._stops: dict[str, StopFlag] = {}  # jobs running in this process
        self._cond = threading.Condition()
        self._recovered: set[Path] = set()
        self._dispatcher: threading.Thread | None = None

    # -- asking for work

    def submit(self, dataset: Dataset, config: TrainConfig, owner: str = "", name: str | None = None) -> JobSnapshot:
        """Queue a training run; it starts as soon as a slot is free. Options are checked now, not later."""
        config.validate()
        job_id = runs.new_run_id(name or dataset.report.source)
        return self._insert(job_id, TRAIN, {"config": config.to_dict()}, owner, dataset)

    def submit_task(
        self, kind: str, params: dict[str, Any], owner: str = "", dataset: Dataset | None = None
    ) -> JobSnapshot:
        """Queue other heavy work (the learning-rate test, an evaluation, the speed probe) in the same slots as
        training."""
        if kind not in KIND_NAMES or kind == TRAIN:
            raise ValueError(f"kind must be one of {', '.join(repr(k) for k in KIND_NAMES if k != TRAIN)}. "
                             f"Received: kind={kind!r}")  # fmt: skip
        if kind in RUN_CHANGING:  # it replaces a file of the run: asked now, again when the work writes it
            info = runs.find_run(str(params.get("run", "")))
            if info is None:
                raise UserError(f"There is no run {params.get('run')!r} on this server.")
            access.check(owner, info.owner, f"{RUN_CHANGING[kind]} the run {info.id}")
        job_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        return self._insert(job_id, kind, params, owner, dataset)

    def _insert(self, job_id, kind, params, owner, dataset: Dataset | None) -> JobSnapshot:
        if dataset is not None and not getattr(dataset, "id", ""):
            raise ValueError("A job's dataset must be a saved one (core.datasets), so any process can open it.")
        with db.connect(write=True) as con:
            con.execute(
                "INSERT INTO jobs (id, kind, state, owner, dataset_id, dataset_name, params, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, kind, QUEUED, owner, dataset.id if dataset else None,
                 dataset.title if dataset else "", json.dumps(params), time.time()),
            )  # fmt: skip
        self._wake()
        return self.get(job_id)

    def restart(self, job_id: str, user: str = access.GUEST) -> JobSnapshot:
        """Queue an interrupted (or failed, stopped) job again with the same settings; returns the new job.

        Only the job's owner or an admin may (core.access); the new job is the original owner's (a guest's job
        becomes the restarting user's).
        """
        old = self.get(job_id)
        if old is None:
            raise UserError(f"There is no job {job_id} on this server.")
        access.check(user, old.owner, f"restart the {old.label} {job_id}")
        if not old.finished:
            raise UserError(f"The {old.label} {job_id} has not finished; there is nothing to restart.")
        dataset = _open_dataset(old.dataset_id)
        if old.kind == TRAIN:
            new = self.submit(dataset, old.config, owner=old.owner or user, name=dataset.report.source)
        else:
            new = self.submit_task(old.kind, old.params, owner=old.owner or user, dataset=dataset)
        with db.connect(write=True) as con:
            con.execute("UPDATE jobs SET restarted_as = ? WHERE id = ?", (new.id, job_id))
        return new

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
        return _snapshot(row, pts, since)

    def jobs(self, recent: float | None = RECENT_SECONDS) -> list[JobSnapshot]:
        """Queued and running jobs, and those finished within ``recent`` seconds (all when None); newest first."""
        self._ensure_started()
        since = 0.0 if recent is None else time.time() - recent
        with db.connect() as con:
            rows = con.execute(
                f"SELECT * FROM jobs WHERE state NOT IN {_FINISHED_SQL} OR coalesce(finished, created) >= ? "
                "ORDER BY created DESC, rowid DESC",
                (since,),
            ).fetchall()
        return [_snapshot(r) for r in rows]

    def ahead(self, job_id: str) -> int:
        """Jobs that must start or finish before this queued one starts: those ahead in line, and those running
        now when every slot is taken. 0 once it has started."""
        with db.connect() as con:
            row = con.execute(f"SELECT state, {_LINE} AS line, created, rowid FROM jobs WHERE id = ?",
                              (job_id,)).fetchone()  # fmt: skip
            if row is None or row["state"] != QUEUED:
                return 0
            before = con.execute(
                f"SELECT count(*) FROM jobs WHERE state = ? AND ({_LINE}, created, rowid) < (?, ?, ?)",
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
        if flag := self._stops.get(job_id):
            flag.set()

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
                    recover(path)
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
        return con.execute(f"SELECT count(*) FROM jobs WHERE state NOT IN {_FINISHED_SQL} AND state != ?",
                           (QUEUED,)).fetchone()[0]  # fmt: skip

    def _claim(self, path: Path) -> str | None:
        """Take the oldest queued job when a slot is free (in one write transaction: two processes never take
        the same job, nor more than the slots)."""
        with db.connect(write=True, path=path) as con:
            if self._running_count(con) >= self.max_running:
                return None
            row = con.execute(f"SELECT id FROM jobs WHERE state = ? ORDER BY {_LINE}, created, rowid LIMIT 1",
                              (QUEUED,)).fetchone()  # fmt: skip
            if row is None:
                return None
            # A job on a thread of this process is marked as such: if this process goes, the job was interrupted
            # with it; a worker process records its own id as it starts (until then the dispatcher's stands in).
            if self.executor == RAY:
                worker = RAY_PREFIX + row["id"]
            else:
                worker = (THREAD_PREFIX if self.executor == THREAD else "") + worker_id()
            con.execute("UPDATE jobs SET state = ?, started = ?, worker = ? WHERE id = ?",
                        (STARTING, time.time(), worker, row["id"]))  # fmt: skip
            return row["id"]

    def close(self) -> None:
        """Start no more jobs (those running go on to their end); a waiting warm worker exits."""
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        self._drop_warm()

    def _dispatch(self) -> None:
        if self.executor == RAY:
            self._connect_ray()
        while not self._closed:
            path = db.db_path()
            try:
                job_id = self._claim(path) if path.exists() else None
            except UserError:
                log.warning("the workspace database cannot be read; retrying", exc_info=True)
                job_id = None
            if job_id is None and time.monotonic() - self._last_check > _check_seconds() and path.exists():
                self._last_check = time.monotonic()
                self._check(path)
            if job_id is None:
                self._keep_warm()
                with self._cond:
                    if not self._closed:
                        self._cond.wait(1.0)  # woken by a submit or a finish; one queued elsewhere waits ≤1 s
                continue
            if self.executor == PROCESS:
                self._spawn(path, job_id)
            elif self.executor == RAY:
                self._start_on_ray(path, job_id)
            else:
                flag = self._stops[job_id] = StopFlag(path, job_id)
                threading.Thread(target=self._run, args=(path, job_id, flag), name=f"job-{job_id}",
                                 daemon=True).start()  # fmt: skip

    def _check(self, path: Path) -> None:
        """Look for jobs whose process died, went silent, or has not taken up a stop (see the module's text)."""
        try:
            recover(path)  # a worker of an earlier server that died since: say so
            silent(path, end=lambda job_id, worker: self._signal(job_id, worker, signal.SIGKILL))
            for job_id, worker, waited in unstopped(path):
                late = waited >= stop_grace_seconds() + KILL_AFTER_SECONDS
                self._signal(job_id, worker, signal.SIGKILL if late else signal.SIGTERM)
        except UserError:
            log.warning("the workspace database cannot be read; its jobs are checked again later", exc_info=True)

    def _signal(self, job_id: str, worker: str, sig: int) -> None:
        """End a job's process: SIGTERM (and SIGCONT, should it be paused) or SIGKILL to a process of this machine,
        a kill of its actor on a Ray cluster. A process this one cannot reach is left alone."""
        if worker.startswith(RAY_PREFIX):
            executor = self._connect_ray() if self.executor == RAY else None
            if executor is not None:
                executor.kill(job_id)
            return
        pid = _local_pid(worker)
        if pid is None:
            return
        log.warning("job %s: ending its process %s with %s", job_id, pid, signal.Signals(sig).name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            send = os.killpg if os.getpgid(pid) == pid else os.kill  # a worker leads a session: its children too
            send(pid, sig)
            if sig == signal.SIGTERM:
                send(pid, signal.SIGCONT)

    def _spawn(self, path: Path, job_id: str) -> None:
        """Run the job in a process of its own (``core.worker``), in a session of its own: a signal meant for the
        web server does not reach it, so it outlives a restart of the server. The warm worker takes it when one
        waits; otherwise a new process starts (and first loads TensorFlow)."""
        env = worker_env()
        proc = self._hand_to_warm(path, job_id, env)
        if proc is None:
            try:
                proc = subprocess.Popen([sys.executable, "-m", "core.worker", str(path), job_id], env=env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            except OSError as exc:
                ended_unexpectedly(path, job_id, f"it could not be started: {exc}")
                return
        threading.Thread(target=self._reap, args=(path, job_id, proc), name=f"reap-{job_id}", daemon=True).start()

    # -- the warm worker: a process that has loaded TensorFlow before there is a job for it

    def _keep_warm(self) -> None:
        if self.executor != PROCESS or not self.warm or self._closed:
            return
        if self._warm is not None and self._warm.poll() is None:
            return
        if self._warm is not None:  # it ended while waiting: not a job's loss, but do not start one in a loop
            log.warning("the warm worker ended while waiting (exit status %s)", self._warm.returncode)
            self._warm, self._warm_failed = None, time.monotonic()
        # The next one starts as soon as this one has taken a job: loading TensorFlow costs one core a few seconds
        # beside that job, and the next Train finds a worker ready even right after this job.
        now = time.monotonic()
        if now - self._warm_failed < 60:
            return
        try:
            # The workspace it will most likely serve is named, for whoever looks at the process list.
            self._warm = subprocess.Popen([sys.executable, "-m", "core.worker", "--warm", str(db.db_path())],
                                          env=worker_env(), stdin=subprocess.PIPE, text=True,
                                          start_new_session=True)  # fmt: skip
        except OSError:
            log.warning("no warm worker could be started", exc_info=True)
            self._warm_failed = now

    def _hand_to_warm(self, path: Path, job_id: str, env: dict[str, str]) -> subprocess.Popen | None:
        proc, self._warm = self._warm, None
        if proc is None or proc.poll() is not None:
            return None
        try:
            proc.stdin.write(json.dumps({"db": str(path), "job": job_id, "env": env}) + "\n")
            proc.stdin.close()
        except (OSError, ValueError):  # it ended in the instant since: a new process takes the job
            proc.kill()
            return None
        return proc

    def _drop_warm(self) -> None:
        proc, self._warm = self._warm, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()  # it exits on its own; a kill could land while it starts a job
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    # -- Ray

    def _connect_ray(self):
        if self._ray is None:
            from core import ray_jobs

            try:
                self._ray = ray_jobs.RayExecutor(self.ray_address)
            except UserError as exc:
                self._ray_error = str(exc)
                log.warning("%s", exc)
                return None
        return self._ray

    def _start_on_ray(self, path: Path, job_id: str) -> None:
        executor = self._connect_ray()
        if executor is None:
            _fail(path, job_id, self._ray_error)
            return
        executor.start(path, job_id, on_end=self._wake)

    def _reap(self, path: Path, job_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if code:
            ended_unexpectedly(path, job_id, _exit_words(code))
        self._wake()

    def _run(self, path: Path, job_id: str, flag: StopFlag) -> None:
        try:
            run_job(path, job_id, flag)
        except Exception:  # the database itself failed: the job stays as it was and is found interrupted later
            log.exception("job %s could not record its end", job_id)
        finally:
            self._stops.pop(job_id, None)
            self._wake()


def worker_env() -> dict[str, str]:
    """The environment of a job's process: the same folders and the same code, wherever this process was started
    from (paths in a job's settings, such as an uploaded weights file, stay relative to the same working
    directory)."""
    from core.cache import CACHE_ENV, cache_dir
    from core.workspace import WORK_ENV, work_root

    return {**os.environ, runs.RUNS_ENV: str(runs.runs_dir().resolve()), WORK_ENV: str(work_root().resolve()),
            CACHE_ENV: str(cache_dir().resolve()), db.DB_ENV: str(db.db_path()),
            "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}  # fmt: skip


def _fail(path: Path, job_id: str, error: str) -> None:
    """A job that could not be started at all: failed, with the reason in words."""
    with db.connect(write=True, path=path) as con:
        con.execute(f"UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ? AND state NOT IN {_FINISHED_SQL}",
                    (FAILED, time.time(), error, job_id))  # fmt: skip


def _exit_words(code: int) -> str:
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
    what = KIND_NAMES.get(row["kind"], "job")
    ended = f"ended unexpectedly: {how}" if how else "ended unexpectedly"
    if row["kind"] == TRAIN and runs.find_run(row["id"]) is not None:
        return INTERRUPTED, (f"The {what} process {ended}, after its model was saved but before it recorded its "
                             f"end: the run {row['id']} is complete, on the Runs page.")  # fmt: skip
    if (row["worker"] or "").startswith(THREAD_PREFIX):  # it ran inside a web server that has stopped
        return INTERRUPTED, SERVER_STOPPED
    grace = stop_grace_seconds()
    if row["stop"] == 1 and row["stop_time"] and time.time() - row["stop_time"] >= grace:
        return INTERRUPTED, (f"Stopped by ending its process: the {what} did not take up the stop within {grace:g} s. "
                             "Nothing of it was saved.")  # fmt: skip
    return FAILED, f"The {what} process {ended}. Nothing of it was saved."


def _record_end(con, row, state: str, error: str) -> None:
    con.execute(f"UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ? AND state NOT IN {_FINISHED_SQL}",
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
    return con.execute(f"SELECT * FROM jobs WHERE state NOT IN {_FINISHED_SQL} AND state != ? AND {where}",
                       (QUEUED, *args)).fetchall()  # fmt: skip


def recover(path: Path | None = None) -> list[str]:
    """Mark jobs whose process has gone as interrupted (a server restart, a crash); returns their ids.

    A training's run folder without its marker holds nothing usable and is removed; a complete one stays.
    """
    path = path or db.db_path()
    if not path.exists():
        return []
    with db.connect(path=path) as con:  # read first: the write lock is taken only when there is something to do
        gone = [r for r in _running_rows(con) if not _starting_on_ray(r) and not worker_alive(r["worker"])]
    if not gone:
        return []
    with db.connect(write=True, path=path) as con:
        for r in gone:
            _record_end(con, r, *_ending(r, None))
    for r in gone:
        _remove_partial(r["id"], r["kind"])
    return [r["id"] for r in gone]


def _ago(seconds: float) -> str:
    """'45 s', '2 min', '3 h' (how long ago, roughly)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def silent(path: Path, end: Callable[[str, str], None] | None = None) -> list[str]:
    """Mark running jobs whose process has not said it is alive for ``heartbeat_seconds()`` as failed, in words,
    and end that process (``end(job_id, worker)``), which may be stuck rather than gone; returns their ids. Their
    slots are free again."""
    now = time.time()
    with db.connect(path=path) as con:
        rows = _running_rows(con, "heartbeat < ?", (now - heartbeat_seconds(),))
    marked = []
    for r in rows:
        again = "restart it from the Jobs page" if r["kind"] == TRAIN else f"start the {KIND_NAMES[r['kind']]} again"
        error = (f"The worker running this job stopped answering (last heard from {_ago(now - r['heartbeat'])} "
                 f"ago): {again}.")  # fmt: skip
        try:
            with db.connect(write=True, path=path) as con:
                if not con.execute(f"UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ? AND heartbeat = ? "
                                   f"AND state NOT IN {_FINISHED_SQL}",
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
    """Running jobs asked to stop more than ``stop_grace_seconds()`` ago whose process has not taken the stop up:
    (job id, its worker, seconds since the stop). Only jobs whose own process has taken them (and beaten once): the
    worker named before is the dispatcher's."""
    now = time.time()
    with db.connect(path=path) as con:
        rows = _running_rows(con, "stop = 1 AND stop_time < ? AND heartbeat IS NOT NULL", (now - stop_grace_seconds(),))
    return [(r["id"], r["worker"] or "", now - r["stop_time"]) for r in rows]


def prune(path: Path, days: float = PRUNE_DAYS) -> int:
    """Remove finished jobs older than ``days`` and their chart points, except a training's whose run is still
    there; returns how many."""
    before = time.time() - days * 24 * 3600
    with db.connect(path=path) as con:
        rows = con.execute(f"SELECT id, kind FROM jobs WHERE state IN {_FINISHED_SQL} AND "
                           "coalesce(finished, created) < ?", (before,)).fetchall()  # fmt: skip
    old = [(r["id"],) for r in rows if r["kind"] != TRAIN or not (runs.runs_dir() / r["id"]).is_dir()]
    if old:
        with db.connect(write=True, path=path) as con:
            con.executemany("DELETE FROM job_points WHERE job_id = ?", old)
            con.executemany("DELETE FROM jobs WHERE id = ?", old)
    return len(old)


def _check_seconds() -> float:
    """How often the dispatcher looks for faults: several times within the shortest of its limits."""
    return max(0.2, min(5.0, heartbeat_seconds() / 4, stop_grace_seconds() / 4))


def _local_pid(worker: str) -> int | None:
    """The pid of a job's own process on this machine, while it runs; None for a thread of a server, a Ray job, a
    process elsewhere or one that has ended."""
    if not worker or worker.startswith((THREAD_PREFIX, RAY_PREFIX)) or worker.count(":") < 2:
        return None
    host, pid, _ = worker.rsplit(":", 2)
    if host != socket.gethostname() or int(pid) == os.getpid() or not worker_alive(worker):
        return None
    return int(pid)


_registry: JobRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> JobRegistry:
    """The one registry of this process."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = JobRegistry()
        return _registry
