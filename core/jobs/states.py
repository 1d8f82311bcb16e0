"""What a job is, as every process reads it: its kinds and states, and ``JobSnapshot``, a row of the ``jobs`` table.

    snap = snapshot(row, points)    # from ``SELECT * FROM jobs`` and its ``job_points``
    snap.finished, snap.label, snap.run_dir, snap.config

No TensorFlow, no processes: pages render jobs from these.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.jobs import kinds
from core.jobs.kinds import SPEED
from core.workspace import runs

# Where a job runs: its own process on this machine (the default), a Ray cluster (``core.jobs.executors.ray``), or a
# thread of the dispatching process (for tests that swap in stand-ins).
THREAD, PROCESS, RAY = "thread", "process", "ray"
EXECUTORS = (PROCESS, RAY, THREAD)
THREAD_PREFIX, RAY_PREFIX = "thread:", "ray:"
MAX_BATCH_POINTS = 5000  # per-batch losses drawn in the chart; more are thinned evenly when read
RECENT_SECONDS = 24 * 3600  # finished jobs shown in the jobs view
SERVER_STOPPED = "The server stopped while this job ran; nothing of it was saved."

QUEUED, STARTING, READING, FEATURES, TRAINING = "queued", "starting", "reading", "features", "training"
WORKING = "working"  # a task's state while it runs (its stage names what it does)
COMPLETED, STOPPED, FAILED, CANCELLED, INTERRUPTED = "completed", "stopped", "failed", "cancelled", "interrupted"
FINISHED = (COMPLETED, STOPPED, FAILED, CANCELLED, INTERRUPTED)
# The columns of a job a worker reports progress in (Store.write); the rest are set by the registry's own statements.
PROGRESS_FIELDS = frozenset({"state", "stage", "done", "total", "eta", "epoch", "epochs", "batch", "batches",
                             "path_reason", "phase2_start"})  # fmt: skip
FINISHED_SQL = "(" + ", ".join(f"'{s}'" for s in FINISHED) + ")"
# The order of the line: oldest first, but a speed test (for a time estimate) after the work people asked for.
LINE = f"(kind = '{SPEED}')"


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
    worker: str = ""  # the process running it (core.jobs.store.worker_id), "ray:<job>@..." on a Ray cluster
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
        return kinds.label(self.kind)

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


def snapshot(row, points: list | None = None, since: int = 0) -> JobSnapshot:
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
