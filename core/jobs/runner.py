"""Running one claimed job to its end, in whatever process the executor chose: ``run_job``.

    state = run_job(store, job_id)     # the kind's work (core.jobs.kinds), its progress, its end: all recorded

Nothing escapes: a stop, a user's mistake in words, a bug's type and message (its traceback in the log) all end as
the job's state, so the caller's thread or process lives on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.dataset import Dataset
from core.jobs import kinds
from core.jobs.states import CANCELLED, FAILED
from core.jobs.store import Heartbeat, JobWriter, StopFlag, Store, as_store
from core.util.errors import Cancelled, UserError
from core.workspace import datasets, runs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    params: dict[str, Any]
    dataset: Dataset | None
    job_id: str
    owner: str
    writer: JobWriter
    stop: StopFlag

    def reporter(self, stopped: str | None, flush: bool = False):
        """A task's ``progress(stage, done, total)``: counts into the records, ``Cancelled(stopped)`` on a stop
        (None: the work watches the stop itself); ``flush``: each report shown at once (steps of seconds)."""

        def report(stage: str, done: int, total: int) -> None:
            if stopped and self.stop.is_set():
                raise Cancelled(stopped)
            self.writer.report(stage, done, total)
            if flush:
                self.writer.flush()

        return report

    def run(self, doing: str) -> runs.RunInfo:
        """The run the job is about; a sentence when it was deleted since the job was queued."""
        run = runs.find_run(self.params["run"])
        if run is None:
            raise UserError(f"The run {self.params['run']} was deleted before {doing}.")
        return run


def pinned_version(params: dict[str, Any]) -> int | None:
    """The version of its saved dataset a job was submitted on (None: a job from before versions, or none)."""
    version = params.get("dataset_version") or (params.get("config") or {}).get("dataset_version")
    return version if isinstance(version, int) and not isinstance(version, bool) and version > 0 else None


def open_dataset(dataset_id: str | None, touch: bool = True, version: int | None = None) -> Dataset | None:
    """A job's saved dataset at ``version`` (None: the newest), or None for a job without one."""
    return datasets.open_dataset(dataset_id, touch=touch, version=version) if dataset_id else None


def run_job(
    store: Store | Path,
    job_id: str,
    stop: StopFlag | None = None,
    local: bool = True,
    figures: Callable[[], dict[str, Any]] | None = None,
) -> str:
    """Run a job already claimed by this process (state 'starting') to its end; returns its final state.

    ``local=False``: this process is on another machine than the records (it never touches the database itself).
    ``figures()``: more of this process's figures for the job's metrics as it ends (a worker's peak memory).
    """
    store = as_store(store)
    row = store.job(job_id)
    writer, stop = JobWriter(store, job_id), stop or StopFlag(store, job_id)
    state, error, metrics, result = FAILED, None, {}, None
    try:
        with Heartbeat(store, job_id):
            params = json.loads(row["params"])
            # The version it was given when queued: a version committed while it waited changes nothing.
            dataset = open_dataset(row["dataset_id"], touch=local, version=pinned_version(params))
            ctx = Context(params, dataset, job_id, row["owner"], writer, stop)
            state, metrics, result = kinds.work_of(row["kind"])(ctx)
    except Cancelled:
        state = CANCELLED
    except UserError as exc:
        error = getattr(exc, "short", None) or str(exc)  # the page's words where a remedy is the CLI's
    except Exception as exc:  # a bug: keep the server alive, log the traceback, tell the user
        log.exception("job %s failed", job_id)
        what = kinds.label(row["kind"]) if row["kind"] in kinds.KINDS else "job"
        error = f"The {what} failed unexpectedly: {type(exc).__name__}: {exc}"
    writer.flush()
    if figures is not None:
        metrics = {**(metrics or {}), **figures()}
    store.finish(job_id, row["kind"], state, error, metrics, result)
    return state
