"""Jobs in processes of their own (CLASSIFIER_EXECUTOR=process): a real training in another process, its progress,
a stop within one batch, a worker killed with SIGKILL reported in words while the dispatcher lives on, a frozen
worker found by its silent heartbeat, and a stop the worker does not take up escalated to SIGTERM, then SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import class_entries, make_zip, tiny_config
from processes import freeze

from core.jobs.recovery import worker_alive
from core.jobs.registry import JobRegistry
from core.jobs.states import COMPLETED, FAILED, INTERRUPTED, PROCESS, STOPPED
from core.jobs.store import worker_id
from core.workspace import db, runs
from core.workspace.datasets import open_dataset, save_zip

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


def test_a_stop_ends_the_worker_s_training_after_its_batch_and_keeps_the_model(reg, dataset, monkeypatch):
    # A worker that has taken up the stop is left to save its model, however much longer than the grace that takes.
    monkeypatch.setenv("CLASSIFIER_STOP_GRACE_SECONDS", "1")
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
        while reg.executor._warm is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        warm = reg.executor._warm
        job = reg.submit(dataset, tiny_config(epochs=1), name="warm")
        done = reg.wait(job.id, timeout=TIMEOUT)
        assert done.state == COMPLETED, done.error
        assert worker_pid(job.id) == warm.pid
        assert warm.wait(timeout=60) == 0  # it ran that one job and ended, so its memory went back
        while reg.executor._warm is None or reg.executor._warm is warm:  # a new one waits for the next job
            assert time.monotonic() < deadline
            time.sleep(0.1)
        spare = reg.executor._warm
    finally:
        reg.close()
    assert spare.wait(timeout=60) == 0  # let go without a job: it ends by itself


def wait_gone(worker: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while worker_alive(worker):
        assert time.monotonic() < deadline, f"{worker} still runs"
        time.sleep(0.1)


def test_a_frozen_worker_is_failed_in_words_once_silent_and_the_next_job_gets_its_slot(reg, dataset, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_HEARTBEAT_SECONDS", "5")  # (the workers beat every 1.25 s)
    job = reg.submit(dataset, tiny_config(epochs=400), name="frozen")
    after = reg.submit(dataset, tiny_config(epochs=1), name="after")
    wait_for_epochs(reg, job.id)
    with db.connect() as con:
        worker = con.execute("SELECT worker FROM jobs WHERE id = ?", (job.id,)).fetchone()["worker"]
    freeze(worker_pid(job.id))  # alive to the system, silent to the records
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == FAILED
    assert done.error.startswith("The worker running this job stopped answering (last heard from ")
    assert done.error.endswith(" s ago): restart it from the Jobs page.")
    wait_gone(worker)  # ended, not left frozen beside the next job
    assert not (runs.runs_dir() / job.id).exists()
    assert reg.wait(after.id, timeout=TIMEOUT).state == COMPLETED, reg.get(after.id).error


def test_a_stop_a_frozen_worker_cannot_take_up_ends_its_process_and_says_so(reg, dataset, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_STOP_GRACE_SECONDS", "1")
    job = reg.submit(dataset, tiny_config(epochs=400), name="stuck")
    wait_for_epochs(reg, job.id)
    freeze(worker_pid(job.id))  # as in a long step: no batch ends, so no stop is seen
    reg.stop(job.id)
    assert reg.get(job.id, points=False).stopping  # the page says "Stopping…" at once
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == INTERRUPTED
    assert done.error == (
        "Stopped by ending its process: the training did not take up the stop within 1 s. Nothing of it was saved."
    )
    assert runs.find_run(job.id) is None and not (runs.runs_dir() / job.id).exists()


STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: print("TERM", flush=True))  # a process that does not end on SIGTERM
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_a_process_that_outlives_sigterm_gets_sigkill(monkeypatch):
    monkeypatch.setenv("CLASSIFIER_STOP_GRACE_SECONDS", "1")
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout.readline() == "ready\n"
        with db.connect(write=True) as con:  # a job whose worker is that process, asked to stop a while ago
            con.execute(
                "INSERT INTO jobs (id, kind, state, owner, params, created, started, worker, heartbeat, stop, "
                "stop_time) VALUES ('speed-stubborn', 'speed', 'working', '', '{}', ?, ?, ?, ?, 1, ?)",
                (time.time(), time.time(), worker_id(proc.pid), time.time(), time.time() - 2),
            )
        reg = JobRegistry(max_running=1, executor=PROCESS, warm=False)
        try:
            reg.jobs()  # its dispatcher starts, and looks after the jobs that run
            assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
            assert proc.stdout.read().startswith("TERM\n")  # SIGTERM came first
            done = reg.wait("speed-stubborn", timeout=TIMEOUT)
        finally:
            reg.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert done.state == INTERRUPTED
    assert done.error == (
        "Stopped by ending its process: the speed test did not take up the stop within 1 s. Nothing of it was saved."
    )
