"""What every executor does (``Executor``), and ending a job's process on this machine by its pid."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from core.jobs.recovery import worker_alive
from core.jobs.states import RAY_PREFIX, THREAD_PREFIX
from core.jobs.store import worker_id

log = logging.getLogger(__name__)


def local_pid(worker: str) -> int | None:
    """The pid of a job's own process on this machine, while it runs; None for a thread of a server, a Ray job, a
    process elsewhere or one that has ended."""
    if not worker or worker.startswith((THREAD_PREFIX, RAY_PREFIX)) or worker.count(":") < 2:
        return None
    host, pid, _ = worker.rsplit(":", 2)
    if host != socket.gethostname() or int(pid) == os.getpid() or not worker_alive(worker):
        return None
    return int(pid)


def signal_process(job_id: str, worker: str, sig: int) -> None:
    """SIGTERM (and SIGCONT, should it be paused) or SIGKILL to a job's process on this machine; one this process
    cannot reach is left alone."""
    pid = local_pid(worker)
    if pid is None:
        return
    log.warning("job %s: ending its process %s with %s", job_id, pid, signal.Signals(sig).name)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        send = os.killpg if os.getpgid(pid) == pid else os.kill  # a worker leads a session: its children too
        send(pid, sig)
        if sig == signal.SIGTERM:
            send(pid, signal.SIGCONT)


class Executor:
    """Starts claimed jobs somewhere and ends their processes when asked (a stop not taken up, a silent worker)."""

    name = ""

    def worker_label(self, job_id: str) -> str:
        """Who runs the job until its own process says (recorded as the job is claimed)."""
        return worker_id()

    def start(self, path: Path, job_id: str, on_end: Callable[[], None]) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called by the dispatcher while no job waits."""

    def stop(self, job_id: str) -> None:
        """A stop asked for in this process (the records carry it to every other)."""

    def end(self, job_id: str, worker: str, sig: int) -> None:
        """End a job's process: a local one by signal; a Ray job's only by the Ray executor."""
        if not worker.startswith(RAY_PREFIX):
            signal_process(job_id, worker, sig)

    def alive(self) -> Callable[[str], bool] | None:
        """How to tell whether a Ray job still runs, when this executor can (``recovery.worker_alive``)."""
        return None

    def close(self) -> None:
        """Start nothing more; let go of what waits (a warm worker)."""
