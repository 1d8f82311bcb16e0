"""Jobs on threads of this process: for tests that swap stand-ins into the work (a stopped server interrupts them)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from core.jobs.executors.base import Executor
from core.jobs.runner import run_job
from core.jobs.states import THREAD, THREAD_PREFIX
from core.jobs.store import StopFlag, worker_id

log = logging.getLogger(__name__)


class ThreadExecutor(Executor):
    name = THREAD

    def __init__(self):
        self._stops: dict[str, StopFlag] = {}  # jobs running in this process

    def worker_label(self, job_id: str) -> str:
        # if this process goes, the job was interrupted with it
        return THREAD_PREFIX + worker_id()

    def start(self, path: Path, job_id: str, on_end: Callable[[], None]) -> None:
        flag = self._stops[job_id] = StopFlag(path, job_id)
        threading.Thread(target=self._run, args=(path, job_id, flag, on_end), name=f"job-{job_id}",
                         daemon=True).start()  # fmt: skip

    def stop(self, job_id: str) -> None:
        if flag := self._stops.get(job_id):
            flag.set()

    def _run(self, path: Path, job_id: str, flag: StopFlag, on_end: Callable[[], None]) -> None:
        try:
            run_job(path, job_id, flag)
        except Exception:  # the database itself failed: the job stays as it was and is found interrupted later
            log.exception("job %s could not record its end", job_id)
        finally:
            self._stops.pop(job_id, None)
            on_end()
