"""One job in a process of its own: ``python -m core.worker WORKSPACE_DB JOB_ID``.

Started by the job dispatcher (``core.jobs``; the default executor) for a job it has claimed: the worker
records itself as the job's process, runs it (progress, stops and the result all go through the workspace
database) and exits, so TensorFlow's memory goes back to the system. A crash or an out-of-memory kill ends this
process only; the web server and other jobs go on, and the dispatcher says what happened in words.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from core import db
from core.jobs import STARTING, run_job, worker_id


def main(argv: list[str] | None = None) -> int:
    path, job_id = Path(argv[0]), argv[1]
    with db.connect(write=True, path=path) as con:
        taken = con.execute(
            "UPDATE jobs SET worker = ? WHERE id = ? AND state = ?", (worker_id(), job_id, STARTING)
        ).rowcount
    if not taken:  # cancelled, or taken back, before this process got going
        return 0
    run_job(path, job_id)
    # What this process held at its peak, for the soak benchmark and anyone watching memory: kilobytes on Linux.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with db.connect(write=True, path=path) as con:
        con.execute("UPDATE jobs SET metrics = json_set(metrics, '$.worker_peak_mb', ?) WHERE id = ?",
                    (round(peak_mb, 1), job_id))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
