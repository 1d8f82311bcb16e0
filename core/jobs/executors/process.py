"""Jobs in worker processes of their own on this machine (``python -m core.jobs.worker``): the default executor.

Each job's process runs in a session of its own: a signal meant for the web server does not reach it, so it
outlives a restart of the server and gives its memory back when it ends. One more worker waits ahead with
TensorFlow loaded (``warm``), so the next job starts without the seconds of that import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core import settings
from core.jobs.executors.base import Executor
from core.jobs.recovery import ended_unexpectedly, exit_words
from core.jobs.states import PROCESS
from core.workspace import db

log = logging.getLogger(__name__)
WARM_RETRY_SECONDS = 60  # a warm worker that ended while waiting is not started again sooner


class ProcessExecutor(Executor):
    name = PROCESS

    def __init__(self, warm: bool = True):
        self.warm = warm
        self._warm: subprocess.Popen | None = None
        self._warm_failed = 0.0  # when one last ended before taking a job
        self._closed = False

    def start(self, path: Path, job_id: str, on_end: Callable[[], None]) -> None:
        """The warm worker takes the job when one waits; otherwise a new process starts (and first loads
        TensorFlow)."""
        env = settings.worker_env()
        proc = self._hand_to_warm(path, job_id, env)
        if proc is None:
            try:
                proc = subprocess.Popen([sys.executable, "-m", "core.jobs.worker", str(path), job_id], env=env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            except OSError as exc:
                ended_unexpectedly(path, job_id, f"it could not be started: {exc}")
                return
        threading.Thread(target=self._reap, args=(path, job_id, proc, on_end), name=f"reap-{job_id}",
                         daemon=True).start()  # fmt: skip

    @staticmethod
    def _reap(path: Path, job_id: str, proc: subprocess.Popen, on_end: Callable[[], None]) -> None:
        code = proc.wait()
        if code:
            ended_unexpectedly(path, job_id, exit_words(code))
        on_end()

    def idle(self) -> None:
        """Keep one worker waiting with TensorFlow loaded. The next one starts as soon as this one has taken a job:
        loading TensorFlow costs one core a few seconds beside that job, and the next Train finds a worker ready
        even right after this job."""
        if not self.warm or self._closed:
            return
        if self._warm is not None and self._warm.poll() is None:
            return
        if self._warm is not None:  # it ended while waiting: not a job's loss, but do not start one in a loop
            log.warning("the warm worker ended while waiting (exit status %s)", self._warm.returncode)
            self._warm, self._warm_failed = None, time.monotonic()
        now = time.monotonic()
        if now - self._warm_failed < WARM_RETRY_SECONDS:
            return
        try:
            # The workspace it will most likely serve is named, for whoever looks at the process list.
            self._warm = subprocess.Popen([sys.executable, "-m", "core.jobs.worker", "--warm", str(db.db_path())],
                                          env=settings.worker_env(), stdin=subprocess.PIPE, text=True,
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

    def close(self) -> None:
        self._closed = True
        proc, self._warm = self._warm, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()  # it exits on its own; a kill could land while it starts a job
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
