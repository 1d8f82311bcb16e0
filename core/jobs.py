"""Process-wide jobs: a queue, worker threads, and progress that outlives page reruns.

    job = registry().submit(dataset, config, name="ants")
    registry().get(job.id).snapshot()      # a JobSnapshot: state, progress, metrics so far, from any thread
    registry().stop(job.id)                # honoured within one batch; the model so far is saved
    task = registry().submit_task(LR_FIND, lambda report, stop: lr_find(ds, cfg, progress=report, stop=stop))

Besides training, the learning-rate finder and evaluation run here too (``submit_task``): never in a page's
script run, where a click elsewhere would kill them, and always within the same slots as training.

Training never runs inside a web page's script run, where a click or a rerun would kill it: each job has a
worker thread that waits for its turn (at most ``max_running`` at once, first come first served; 2 CPU cores
are not shared well), calls ``core.training.train`` and records every event under the job's lock.
The job id is also the run folder's name, so a finished job is found again on disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core import runs
from core.config import TrainConfig
from core.dataset import Dataset
from core.errors import Cancelled, UserError

log = logging.getLogger(__name__)
MAX_JOBS_ENV = "CLASSIFIER_MAX_JOBS"
MAX_BATCH_POINTS = 5000  # per-batch losses kept for the chart; older points are thinned

TRAIN, LR_FIND, EVALUATE = "train", "lr_find", "evaluate"  # kinds of job
QUEUED, READING, FEATURES, TRAINING = "queued", "reading", "features", "training"
WORKING = "working"  # a task's state while it runs (its stage names what it does)
COMPLETED, STOPPED, FAILED, CANCELLED = "completed", "stopped", "failed", "cancelled"
FINISHED = (COMPLETED, STOPPED, FAILED, CANCELLED)
KIND_NAMES = {TRAIN: "training", LR_FIND: "learning-rate test", EVALUATE: "evaluation"}


# A task reports progress as report(stage, done, total) and must honour ``stop``; it returns its result.
Task = Callable[[Callable[[str, int, int], None], threading.Event], Any]


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's public state, for rendering."""

    id: str
    kind: str
    state: str
    dataset: str
    owner: str
    elapsed: float
    done: int
    total: int
    stage: str  # what a task is doing now ("features", "testing", "classifying", ...)
    epoch: int
    epochs: int
    batch: int
    batches: int
    eta: float | None
    epoch_logs: list[dict[str, float]]
    batch_losses: list[dict[str, float]]
    metrics: dict[str, Any]
    error: str | None
    path_reason: str
    phase2_start: int | None
    stopping: bool  # a stop was asked for and the job has not finished yet
    result: Any = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass
class Job:
    id: str
    config: TrainConfig | None
    dataset: Dataset | None
    owner: str = ""
    kind: str = TRAIN
    task: Task | None = None
    result: Any = None
    stage: str = ""
    _stage_start: float = 0.0
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: int = 0  # images read or batches trained, in the current stage
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    eta: float | None = None
    epoch_logs: list[dict[str, float]] = field(default_factory=list)
    batch_losses: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    path_reason: str = ""
    phase2_start: int | None = None  # first epoch of phase 2 in a two-phase run
    stop_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def run_dir(self):
        return runs.runs_dir() / self.id

    def on_event(self, ev) -> None:
        """Listener for ``core.training.train``: called from the worker thread."""
        with self.lock:
            self.state = ev.stage  # reading, features or training
            if ev.kind == "plan":
                self.path_reason = ev.message
                if ev.phase == 2:
                    self.phase2_start = ev.epoch
            self.done, self.total, self.eta = ev.done, ev.total, ev.eta
            self.epoch, self.epochs, self.batch, self.batches = ev.epoch, ev.epochs, ev.batch, ev.batches
            if ev.kind == "batch" and "loss" in ev.logs:
                self.batch_losses.append({"step": ev.done, "epoch": ev.epoch, "loss": ev.logs["loss"]})
                if len(self.batch_losses) > MAX_BATCH_POINTS:
                    self.batch_losses = self.batch_losses[::2]
            elif ev.kind == "epoch":
                self.epoch_logs.append({"epoch": ev.epoch, **ev.logs, **({"phase": ev.phase} if ev.phase else {})})

    def report(self, stage: str, done: int, total: int) -> None:
        """A task's progress: counts and an ETA from the time this stage has taken so far."""
        with self.lock:
            if stage != self.stage:
                self.stage, self._stage_start = stage, time.monotonic()
            self.state = WORKING
            elapsed = time.monotonic() - self._stage_start
            self.done, self.total = done, total
            self.eta = elapsed / done * (total - done) if done else None

    def snapshot(self) -> JobSnapshot:
        with self.lock:
            now = self.finished or time.time()
            return JobSnapshot(
                id=self.id,
                kind=self.kind,
                state=self.state,
                dataset=self.dataset.report.source if self.dataset else "",
                owner=self.owner,
                elapsed=(now - self.started) if self.started else 0.0,
                done=self.done,
                total=self.total,
                stage=self.stage,
                epoch=self.epoch,
                epochs=self.epochs or (self.config.total_epochs if self.config else 0),
                batch=self.batch,
                batches=self.batches,
                eta=self.eta,
                epoch_logs=list(self.epoch_logs),
                batch_losses=list(self.batch_losses),
                metrics=dict(self.metrics),
                error=self.error,
                path_reason=self.path_reason,
                phase2_start=self.phase2_start,
                stopping=self.stop_event.is_set() and self.state not in FINISHED,
                result=self.result,
            )


class JobRegistry:
    def __init__(self, max_running: int | None = None):
        self.max_running = max_running or int(os.environ.get(MAX_JOBS_ENV) or 1)
        self._jobs: dict[str, Job] = {}
        self._waiting: list[str] = []
        self._running = 0
        self._cond = threading.Condition()

    def submit(self, dataset: Dataset, config: TrainConfig, owner: str = "", name: str | None = None) -> Job:
        """Queue a training run; it starts as soon as a slot is free. Options are checked now, not later."""
        config.validate()
        job = Job(id=runs.new_run_id(name or dataset.report.source), config=config, dataset=dataset, owner=owner)
        return self._enqueue(job)

    def submit_task(self, kind: str, task: Task, owner: str = "", dataset: Dataset | None = None) -> Job:
        """Queue other heavy work (the learning-rate finder, an evaluation) in the same slots as training."""
        job = Job(id=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}", config=None,
                  dataset=dataset, owner=owner, kind=kind, task=task)  # fmt: skip
        return self._enqueue(job)

    def _enqueue(self, job: Job) -> Job:
        with self._cond:
            self._jobs[job.id] = job
            self._waiting.append(job.id)
        threading.Thread(target=self._work, args=(job,), name=f"{job.kind}-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._cond:
            return list(self._jobs.values())

    def ahead(self, job_id: str) -> int:
        """Runs that must start or finish before this queued one starts: those ahead in line, and those
        training now when every slot is taken. 0 once its worker has taken it."""
        with self._cond:
            if job_id not in self._waiting:
                return 0
            place = self._waiting.index(job_id)
            return place + (self._running if self._running >= self.max_running else 0)

    def stop(self, job_id: str) -> None:
        job = self.get(job_id)
        if job is None:
            return
        job.stop_event.set()
        with self._cond:
            self._cond.notify_all()

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self._jobs[job_id]
        with self._cond:
            while job.state not in FINISHED:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {job_id} still {job.state}")
                self._cond.wait(left)
        return job

    def _work(self, job: Job) -> None:
        with self._cond:
            while not job.stop_event.is_set() and (self._waiting[0] != job.id or self._running >= self.max_running):
                self._cond.wait()
            self._waiting.remove(job.id)
            if job.stop_event.is_set():  # stopped while still queued: nothing to save
                self._finish(job, CANCELLED)
                return
            self._running += 1
            self._cond.notify_all()  # the next in line may also fit
        job.started = time.time()
        state, error, metrics = FAILED, None, {}
        try:
            if job.task is not None:
                job.result = job.task(job.report, job.stop_event)
                state = COMPLETED
            else:
                from core.training import train  # TensorFlow loads in the worker, never in a page's script run

                result = train(job.dataset, job.config, job.run_dir, job.on_event, job.stop_event)
                state, metrics = result.status, result.metrics
        except Cancelled:
            state = CANCELLED
        except UserError as exc:
            error = getattr(exc, "short", None) or str(exc)  # the page's words where a remedy is the CLI's
        except Exception as exc:  # a bug: keep the server alive, log the traceback, tell the user
            log.exception("job %s failed", job.id)
            error = f"The {KIND_NAMES[job.kind]} failed unexpectedly: {type(exc).__name__}: {exc}"
        with self._cond:
            self._running -= 1
            job.metrics = metrics
            job.error = error
            self._finish(job, state)

    def _finish(self, job: Job, state: str) -> None:
        with job.lock:
            job.state = state
            job.finished = time.time()
        self._cond.notify_all()


_registry: JobRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> JobRegistry:
    """The one registry of this process."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = JobRegistry()
        return _registry


def lr_find_task(dataset: Dataset, config: TrainConfig) -> Task:
    """The learning-rate range test as a job's task; its result is the ``LRFinding``."""

    def task(report: Callable[[str, int, int], None], stop: threading.Event):
        from core.lrfind import lr_find  # TensorFlow loads in the worker

        return lr_find(dataset, config, progress=report, stop=stop)

    return task


def evaluate_task(run_dir, dataset: Dataset | None, top_k: int) -> Task:
    """An evaluation as a job's task: it saves evaluation.json in the run folder and returns the ``Evaluation``."""

    def task(report: Callable[[str, int, int], None], stop: threading.Event):
        from core.evaluate import evaluate_run

        def progress(done: int, total: int) -> None:
            if stop.is_set():
                raise Cancelled("Evaluation stopped; nothing was saved.")
            report("classifying", done, total)

        return evaluate_run(run_dir, dataset, top_k=top_k, progress=progress)

    return task
