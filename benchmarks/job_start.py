"""From Train to the first progress: a training job queued as the Train page queues it, with and without a warm worker.

    python benchmarks/job_start.py

A saved dataset of 30 generated images (3 classes), VGG16 at 32 px, random weights, 1 epoch, run by the process
executor; for each setting of ``CLASSIFIER_WARM_WORKER`` two jobs one after the other, each in a fresh workspace:
seconds from ``submit`` to the first progress the page can show (a stage, a count or an epoch) and to the end.
The warm worker loads TensorFlow while nobody waits, so from the second job on it is ready; without it every job
starts a process that imports TensorFlow first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(warm: str) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from conftest import class_entries, make_zip

    from core.config import TrainConfig
    from core.jobs.registry import JobRegistry
    from core.jobs.states import PROCESS
    from core.workspace.datasets import open_dataset, save_zip

    work = os.environ["CLASSIFIER_WORK_DIR"]
    zipped = make_zip(Path(work) / "colours.zip", class_entries(classes=("red", "green", "blue"), per_class=10))
    ds = open_dataset(save_zip(zipped).id)
    reg = JobRegistry(max_running=1, executor=PROCESS)
    config = TrainConfig(weights="none", image_size=32, epochs=1)
    time.sleep(15 if warm == "1" else 0)  # the warm worker loads TensorFlow meanwhile
    for k in range(2):
        t0 = time.monotonic()
        job = reg.submit(ds, config, owner="bench@example.com", name="colours")
        first = None
        while not (s := reg.get(job.id)).finished:
            if first is None and (s.total or s.stage or s.epoch_logs):
                first = time.monotonic() - t0
            time.sleep(0.02)
        print(f"warm worker {warm}, job {k + 1}: {s.state}; first progress {first:.2f} s, "
              f"done {time.monotonic() - t0:.1f} s", flush=True)  # fmt: skip
        time.sleep(15 if warm == "1" else 0)
    reg.close()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    for warm in ("0", "1"):
        with tempfile.TemporaryDirectory(prefix="job-start-") as tmp:
            env = {**os.environ, "CLASSIFIER_WARM_WORKER": warm, "CLASSIFIER_RUNS_DIR": f"{tmp}/runs",
                   "CLASSIFIER_WORK_DIR": f"{tmp}/work", "CLASSIFIER_CACHE_DIR": f"{tmp}/cache"}  # fmt: skip
            Path(f"{tmp}/work").mkdir()
            out = subprocess.run([sys.executable, __file__, "--child", warm], env=env, capture_output=True, text=True)
            print(
                "\n".join(line for line in out.stdout.splitlines() if line.startswith("warm worker"))
                or out.stderr[-2000:]
            )


if __name__ == "__main__":
    main()
