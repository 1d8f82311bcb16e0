"""Process-wide training jobs: a queue, worker threads, and progress that outlives page reruns.

    job = registry().submit(dataset, config, name="ants")
    registry().get(job.id).snapshot()      # state, progress, metrics so far: safe to call from any thread
    registry().stop(job.id)                # honoured within one batch; the model so far is saved

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
from dataclasses import dataclass, field
from typing import Any

from core import runs
from core.config import TrainConfig
from core.dataset import Dataset
from core.errors import Cancelled, UserError

log = logging.getLogger(__name__)
MAX_JOBS_ENV = "CLASSIFIER_MAX_JOBS"
MAX_BATCH_POINTS = 5000  # per-batch losses kept for the chart; older points are thinned

QUEUED, READING, FEATURES, TRAINING = "queued", "reading", "features", "training"
COMPLETED, STOPPED, FAILED, CANCELLED = "completed", "stopped", "failed", "cancelled"
FINISHED = (COMPLETED, STOPPED, FAILED, CANCELLED)


@dataclass
class Job:
    id: str
    config: TrainConfig
    dataset: Dataset
    owner: str = ""
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

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the job's public state for rendering."""
        with self.lock:
            now = self.finished or time.time()
            return {
                "id": self.id,
                "state": self.state,
                "dataset": self.dataset.report.source,
                "owner": self.owner,
                "elapsed": (now - self.started) if self.started else 0.0,
                "done": self.done,
                "total": self.total,
                "epoch": self.epoch,
                "epochs": self.epochs or self.config.total_epochs,
                "batch": self.batch,
                "batches": self.batches,
                "eta": self.eta,
                "epoch_logs": list(self.epoch_logs),
                "batch_losses": list(self.batch_losses),
                "metrics": dict(self.metrics),
                "error": self.error,
                "path_reason": self.path_reason,
                "phase2_start": self.phase2_start,
                "stopping": self.stop_event.is_set() and self.state not in FINISHED,
            }


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
        with self._cond:
            self._jobs[job.id] = job
            self._waiting.append(job.id)
        threading.Thread(target=self._work, args=(job,), name=f"train-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._cond:
            return list(self._jobs.values())

    def position(self, job_id: str) -> int:
        """1 for the next job to start, 2 for the one after...; 0 when not waiting."""
        with self._cond:
            return self._waiting.index(job_id) + 1 if job_id in self._waiting else 0

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
            from core.training import train  # TensorFlow loads in the worker, never in a page's script run

            result = train(job.dataset, job.config, job.run_dir, job.on_event, job.stop_event)
            state, metrics = result.status, result.metrics
        except Cancelled:
            state = CANCELLED
        except UserError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: keep the server alive, log the traceback, tell the user
            log.exception("training job %s failed", job.id)
            error = f"Training failed unexpectedly: {type(exc).__name__}: {exc}"
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
