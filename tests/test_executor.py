"""Jobs in processes of their own (CLASSIFIER_EXECUTOR=process): a real training in another process, its progress,
a stop within one batch, and a worker killed with SIGKILL reported in words while the dispatcher lives on."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import class_entries, make_zip, tiny_config

from core import db, runs
from core.datasets import open_dataset, save_zip
from core.jobs import COMPLETED, FAILED, PROCESS, STOPPED, JobRegistry

TIMEOUT = 600


@pytest.fixture
def reg():
    registry = JobRegistry(max_running=1, executor=PROCESS)
    yield registry
    registry.close()


@pytest.fixture
def dataset(tmp_path):
    return open_dataset(save_zip(make_zip(tmp_path / "colours.zip", class_entries(per_class=6))).id)


def worker_pid(job_id: str) -> int:
    with db.connect() as con:
        worker = con.execute("SELECT worker FROM jobs WHERE id = ?", (job_id,)).fetchone()["worker"]
    return int(worker.rsplit(":", 2)[1])


def wait_for_epochs(reg: JobRegistry, job_id: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not reg.get(job_id).epoch_logs:
        assert not reg.get(job_id, points=False).finished, reg.get(job_id).error
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_training_runs_in_a_process_of_its_own_and_lands_its_run(reg, dataset):
    job = reg.submit(dataset, tiny_config(epochs=2), owner="ann@example.com", name="colours")
    wait_for_epochs(reg, job.id)
    assert worker_pid(job.id) != os.getpid()
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    assert [e["epoch"] for e in done.epoch_logs] == [1, 2]
    run = runs.find_run(job.id)
    assert run is not None and run.owner == "ann@example.com" and run.dataset_id == dataset.id


def test_a_stop_ends_the_worker_s_training_after_its_batch_and_keeps_the_model(reg, dataset):
    job = reg.submit(dataset, tiny_config(epochs=400), name="long")
    wait_for_epochs(reg, job.id)
    reg.stop(job.id)
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == STOPPED, done.error
    assert runs.find_run(job.id).status == "stopped"


def test_a_worker_killed_with_sigkill_is_reported_in_words_and_the_next_job_runs(reg, dataset):
    job = reg.submit(dataset, tiny_config(epochs=400), name="doomed")
    after = reg.submit(dataset, tiny_config(epochs=1), name="after")
    wait_for_epochs(reg, job.id)
    os.kill(worker_pid(job.id), signal.SIGKILL)
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == FAILED
    assert done.error == (
        "The training process ended unexpectedly: it was killed by SIGKILL, as the system does when it runs out of "
        "memory. Nothing of it was saved."
    )
    assert not (runs.runs_dir() / job.id).exists()  # nothing half-made stays
    assert reg.wait(after.id, timeout=TIMEOUT).state == COMPLETED  # this process and the queue go on
    assert runs.find_run(job.id) is None


def test_a_warm_worker_waits_with_tensorflow_loaded_takes_the_next_job_and_exits_when_let_go(dataset):
    reg = JobRegistry(max_running=1, executor=PROCESS, warm=True)
    try:
        reg.jobs()  # the dispatcher starts, and with it a worker that loads TensorFlow before there is a job
        deadline = time.monotonic() + TIMEOUT
        while reg._warm is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        warm = reg._warm
        job = reg.submit(dataset, tiny_config(epochs=1), name="warm")
        done = reg.wait(job.id, timeout=TIMEOUT)
        assert done.state == COMPLETED, done.error
        assert worker_pid(job.id) == warm.pid
        assert warm.wait(timeout=60) == 0  # it ran that one job and ended, so its memory went back
        while reg._warm is None or reg._warm is warm:  # a new one waits for the next job
            assert time.monotonic() < deadline
            time.sleep(0.1)
        spare = reg._warm
    finally:
        reg.close()
    assert spare.wait(timeout=60) == 0  # let go without a job: it ends by itself
