"""One job in a process of its own: ``python -m core.jobs.worker DB JOB_ID``, or ``python -m core.jobs.worker --warm
[DB]``.

Started by the job dispatcher (``core.jobs.registry``; the default executor) for a job it has claimed: the worker
records itself as the job's process, runs it (progress, stops and the result all go through the workspace
database) and exits, so TensorFlow's memory goes back to the system. A crash or an out-of-memory kill ends this
process only; the web server and other jobs go on, and the dispatcher says what happened in words.

While the job runs, a thread of this process records a heartbeat every few seconds (``core.jobs.store.Heartbeat``): a
worker frozen or stuck past ``$CLASSIFIER_HEARTBEAT_SECONDS`` is ended by the dispatcher and its job failed in words.
SIGTERM keeps its default meaning here (the process ends at once, even inside a long step): the dispatcher sends it
when a stop is not taken up within ``$CLASSIFIER_STOP_GRACE_SECONDS``, and SIGKILL a few seconds later.

``--warm``: a worker started ahead of time. It loads TensorFlow and the training code at once, then waits for one
line on its standard input, ``{"db": ..., "job": ..., "env": {...}}``, and runs that job as above; the few seconds
TensorFlow takes to load are then paid before anyone presses Train. When its input closes first (the dispatcher
stopped, or its server went away) it exits without doing anything.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from core import settings
from core.jobs import kinds
from core.jobs.host import figures, lower_priority
from core.jobs.runner import run_job
from core.jobs.store import Store, worker_id


def work(path: Path, job_id: str) -> int:
    store = Store(path)
    if not store.take(job_id, worker_id()):  # cancelled, or taken back, before this process got going
        return 0
    run_job(store, job_id, figures=figures)
    return 0


def warm() -> int:
    kinds.preload()  # TensorFlow, Keras and every kind's work, loaded before there is a job
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    settings.apply(order.get("env") or {})
    return work(Path(order["db"]), order["job"])


def default_sigterm() -> None:
    """SIGTERM ends this process at once, whatever the server that started it did with the signal (an ignored or
    blocked signal is inherited across exec)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lower_priority()
    default_sigterm()
    if argv[:1] == ["--warm"]:  # (the workspace it is started for follows, for the process list only)
        return warm()
    return work(Path(argv[0]), argv[1])


if __name__ == "__main__":
    sys.exit(main())
