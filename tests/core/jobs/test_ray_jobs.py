"""Jobs on a real local Ray cluster (``ray start --head --num-cpus 2``, started here): a tiny training lands a run that
loads and predicts like the same training on this machine, a stop is honoured, a machine that cannot see the
shared folders says so, an unreachable cluster is reported in words without a wait of minutes, a Ray worker that
goes silent is failed in words and its slot freed, and a stop it cannot take up ends its actor."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import class_entries, make_zip, tiny_config
from processes import freeze

from core.jobs.executors import ray as ray_jobs
from core.jobs.recovery import worker_alive
from core.jobs.registry import JobRegistry
from core.jobs.states import COMPLETED, FAILED, INTERRUPTED, PROCESS, RAY, STOPPED
from core.workspace import db, runs
from core.workspace.datasets import open_dataset, save_zip

TIMEOUT = 600
RAY_CLI = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A real Ray head with two CPUs, in the foreground (``--block``) so that ending it ends only this cluster."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [RAY_CLI, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0", "--port", str(port),
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None, "ray start --head ended"
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.5)
    yield address
    import ray

    ray.shutdown()
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)  # the cluster's own processes are in its group: nothing outlives the kill below
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def on_ray(cluster):
    reg = JobRegistry(max_running=1, executor=RAY, ray_address=cluster)
    yield reg
    reg.close()


@pytest.fixture
def dataset(tmp_path):
    return open_dataset(save_zip(make_zip(tmp_path / "colours.zip", class_entries(per_class=6))).id)


def _worker(job_id: str) -> str:
    with db.connect() as con:
        return con.execute("SELECT worker FROM jobs WHERE id = ?", (job_id,)).fetchone()["worker"]


def _probabilities(run_dir: Path, dataset) -> np.ndarray:
    from core.model.inputs import load_image
    from core.model.predict import load_run

    run = load_run(run_dir)
    size = run.config.image_size
    return run.probabilities(np.stack([load_image(dataset.root / item.path, size) for item in dataset.items]))


def test_a_training_on_ray_lands_a_run_that_predicts_like_the_same_training_here(on_ray, dataset):
    config = tiny_config(epochs=2)
    job = on_ray.submit(dataset, config, owner="ann@example.com", name="on-ray")
    done = on_ray.wait(job.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    worker = _worker(job.id)
    assert worker.startswith(f"ray:{job.id}@") and f":{os.getpid()}:" not in worker  # a Ray worker process
    assert [e["epoch"] for e in done.epoch_logs] == [1, 2]  # progress came back through the relay
    assert done.metrics.get("worker_peak_mb", 0) > 0
    ray_run = runs.find_run(job.id)
    assert ray_run is not None and ray_run.owner == "ann@example.com" and ray_run.dataset_id == dataset.id

    on_ray.close()  # from here on, only the local registry starts jobs
    here = JobRegistry(max_running=1, executor=PROCESS, warm=False)
    try:
        local = here.wait(here.submit(dataset, config, name="here").id, timeout=TIMEOUT)
    finally:
        here.close()
    assert local.state == COMPLETED, local.error
    assert not _worker(local.id).startswith("ray:")
    a, b = _probabilities(ray_run.path, dataset), _probabilities(runs.find_run(local.id).path, dataset)
    # Same settings and seed, two processes on two executors: the same model, up to the order of float sums.
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (a.argmax(1) == b.argmax(1)).all()
    assert [e["val_accuracy"] for e in done.epoch_logs] == pytest.approx([e["val_accuracy"] for e in local.epoch_logs])


def test_a_stop_reaches_a_training_on_ray_and_the_model_so_far_is_saved(on_ray, dataset):
    job = on_ray.submit(dataset, tiny_config(epochs=400), name="long")
    deadline = time.monotonic() + TIMEOUT
    while not on_ray.get(job.id).epoch_logs:
        assert not on_ray.get(job.id, points=False).finished, on_ray.get(job.id).error
        assert time.monotonic() < deadline
        time.sleep(0.2)
    on_ray.stop(job.id)
    done = on_ray.wait(job.id, timeout=TIMEOUT)
    assert done.state == STOPPED, done.error
    assert len(done.epoch_logs) < 400
    assert runs.find_run(job.id).status == "stopped"


def test_a_ray_worker_that_cannot_see_the_shared_folders_says_so(on_ray, dataset, tmp_path, monkeypatch):
    elsewhere = tmp_path / "not-mounted"  # the workspace folder as a machine without the shared mount sees it
    real = ray_jobs.shared_env
    monkeypatch.setattr(ray_jobs, "shared_env", lambda: {**real(), "CLASSIFIER_WORK_DIR": str(elsewhere)})
    job = on_ray.submit(dataset, tiny_config(epochs=1), name="unseen")
    done = on_ray.wait(job.id, timeout=TIMEOUT)
    assert done.state == FAILED
    assert done.error.startswith(f"The machine {socket.gethostname()} that took this job cannot see the dataset's")
    assert "at the same path" in done.error and "README" in done.error
    assert runs.find_run(job.id) is None


def test_a_ray_cluster_that_does_not_answer_is_reported_in_words_within_seconds(dataset):
    port = _free_port()  # nothing listens there
    reg = JobRegistry(max_running=1, executor=RAY, ray_address=f"127.0.0.1:{port}")
    try:
        start = time.monotonic()
        done = reg.wait(reg.submit(dataset, tiny_config(epochs=1), name="nowhere").id, timeout=120)
    finally:
        reg.close()
    assert done.state == FAILED
    assert done.error.startswith(f"The Ray cluster at 127.0.0.1:{port} cannot be reached")
    assert "unset RAY_ADDRESS" in done.error
    assert time.monotonic() - start < 60


def _running_on_ray(reg: JobRegistry, job_id: str) -> tuple[str, int]:
    """Once the job has trained an epoch: its worker's name and the pid of its actor's process (on this machine)."""
    deadline = time.monotonic() + TIMEOUT
    while not reg.get(job_id).epoch_logs:
        assert not reg.get(job_id, points=False).finished, reg.get(job_id).error
        assert time.monotonic() < deadline
        time.sleep(0.2)
    worker = _worker(job_id)
    return worker, int(worker.rsplit(":", 2)[1])


def _end(worker: str) -> None:
    """The actor's process, should it still run (the same process: its start time is in its name)."""
    process = worker.partition("@")[2]
    if worker_alive(process):
        os.kill(int(process.rsplit(":", 2)[1]), signal.SIGKILL)


def test_a_ray_worker_gone_silent_is_failed_in_words_its_actor_ended_and_its_slot_freed(on_ray, dataset, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_HEARTBEAT_SECONDS", "6")  # (the Ray workers beat every 1.5 s, through the relay)
    job = on_ray.submit(dataset, tiny_config(epochs=400), name="vanished")
    after = on_ray.submit(dataset, tiny_config(epochs=1), name="after")
    worker, pid = _running_on_ray(on_ray, job.id)
    freeze(pid, settle=0.5)
    try:
        done = on_ray.wait(job.id, timeout=TIMEOUT)
        assert done.state == FAILED, done.error
        assert done.error.startswith("The worker running this job stopped answering (last heard from ")
        assert done.error.endswith(" ago): restart it from the Jobs page.")
        assert on_ray.wait(after.id, timeout=TIMEOUT).state == COMPLETED, on_ray.get(after.id).error
        deadline = time.monotonic() + TIMEOUT
        while worker_alive(worker.partition("@")[2]):  # its actor was killed, not left holding its CPU
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        _end(worker)
    assert runs.find_run(job.id) is None


def test_a_stop_a_ray_worker_cannot_take_up_ends_its_actor_and_says_so(on_ray, dataset, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_STOP_GRACE_SECONDS", "1")
    job = on_ray.submit(dataset, tiny_config(epochs=400), name="stuck")
    worker, pid = _running_on_ray(on_ray, job.id)
    freeze(pid, settle=0.5)
    try:
        on_ray.stop(job.id)
        assert on_ray.get(job.id, points=False).stopping
        done = on_ray.wait(job.id, timeout=TIMEOUT)
    finally:
        _end(worker)
    assert done.state == INTERRUPTED, done.error
    assert done.error == (
        "Stopped by ending its process: the training did not take up the stop within 1 s. Nothing of it was saved."
    )
