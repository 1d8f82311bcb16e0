"""Jobs in the workspace database: real trainings through the registry, concurrent progress writers, a restart
that finds interrupted and queued jobs, stops and who may ask for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, class_entries, make_zip, tiny_config

from core import access, db, runs
from core import jobs as jobs_module
from core.datasets import open_dataset, save_zip
from core.jobs import (
    CANCELLED,
    COMPLETED,
    INTERRUPTED,
    QUEUED,
    STOPPED,
    THREAD,
    THREAD_PREFIX,
    TRAIN,
    JobRegistry,
    JobWriter,
    recover,
    worker_alive,
    worker_id,
)

TIMEOUT = 600


@pytest.fixture
def new_registry():
    """Registries made by a test, closed after it so that none starts another test's jobs."""
    made = []

    def make(**kwargs) -> JobRegistry:
        made.append(JobRegistry(**{"executor": THREAD, **kwargs}))  # worker processes: test_executor.py
        return made[-1]

    yield make
    for reg in made:
        reg.close()


@pytest.fixture
def dataset(tmp_path):
    saved = save_zip(make_zip(tmp_path / "colours.zip", class_entries(per_class=6)), owner="ann@example.com")
    return open_dataset(saved.id)


def _row(job_id: str):
    with db.connect() as con:
        return con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()


def test_a_real_training_reports_progress_and_lands_an_indexed_run(dataset, new_registry):
    reg = new_registry(max_running=1)
    job = reg.submit(dataset, tiny_config(epochs=2), owner="ann@example.com", name="colours")
    assert job.state == QUEUED and job.owner == "ann@example.com" and job.dataset_id == dataset.id
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    assert [e["epoch"] for e in done.epoch_logs] == [1, 2]  # every epoch reached the database
    assert done.batch_losses and done.done == done.total
    info = runs.find_run(job.id)
    assert info is not None and info.owner == "ann@example.com" and info.dataset_id == dataset.id
    with db.connect() as con:
        indexed = con.execute("SELECT * FROM runs WHERE id = ?", (job.id,)).fetchone()
    assert indexed["owner"] == "ann@example.com" and indexed["dataset_id"] == dataset.id


def test_a_stop_asked_from_another_process_is_honoured_and_saves_the_model(dataset, new_registry):
    reg = new_registry(max_running=1)
    job = reg.submit(dataset, tiny_config(epochs=400), name="long")
    while not reg.get(job.id).epoch_logs:
        time.sleep(0.05)
    code = f"from core.jobs import JobRegistry; JobRegistry(dispatch=False).stop({job.id!r})"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=os.environ, timeout=120)
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == STOPPED
    assert runs.find_run(job.id).status == "stopped"


def test_one_slot_runs_jobs_in_order_and_counts_those_ahead(dataset, new_registry):
    reg = new_registry(max_running=1)
    first = reg.submit(dataset, tiny_config(epochs=400), name="first")
    second = reg.submit(dataset, tiny_config(epochs=1), name="second")
    third = reg.submit(dataset, tiny_config(epochs=1), name="third")
    while not reg.get(first.id).epoch_logs:  # a stop before the first whole epoch saves nothing
        time.sleep(0.05)
    assert reg.get(second.id, points=False).state == QUEUED
    assert reg.ahead(second.id) == 1 and reg.ahead(third.id) == 2
    reg.stop(third.id)  # a queued job is cancelled at once, without a slot
    assert reg.get(third.id, points=False).state == CANCELLED
    reg.stop(first.id)
    assert reg.wait(first.id, timeout=TIMEOUT).state == STOPPED
    assert reg.wait(second.id, timeout=TIMEOUT).state == COMPLETED


def test_only_the_owner_or_an_admin_may_stop_a_job(dataset, monkeypatch, new_registry):
    reg = new_registry(max_running=1)
    blocker = reg.submit(dataset, tiny_config(epochs=400), owner="ann@example.com", name="blocker")
    job = reg.submit(dataset, tiny_config(), owner="ann@example.com", name="queued")
    with pytest.raises(access.NotAllowed, match=r"Only ann@example\.com or an admin may stop"):
        reg.stop(job.id, "bob@example.com")
    with pytest.raises(access.NotAllowed, match="you are not signed in"):
        reg.stop(job.id, access.GUEST)
    assert reg.get(job.id, points=False).state == QUEUED
    monkeypatch.setenv(access.ADMINS_ENV, "boss@example.com")
    reg.stop(job.id, "Boss@Example.com")
    assert reg.get(job.id, points=False).state == CANCELLED
    reg.stop(blocker.id, "ann@example.com")
    assert reg.wait(blocker.id, timeout=TIMEOUT).finished


def _writer_process(path: str, job_id: str, tag: str, n: int) -> None:
    code = (
        "import sys; from pathlib import Path; from core.jobs import JobWriter\n"
        f"w = JobWriter(Path({path!r}), {job_id!r})\n"
        f"for i in range({n}):\n"
        f"    w.point('batch', {{'writer': {tag!r}, 'i': i}}); w.set(force=True, done=i + 1)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=os.environ)


def test_concurrent_writers_in_threads_and_processes_lose_nothing():
    path = db.db_path()
    with db.connect(write=True) as con:
        for job_id in ("shared", "a", "b"):
            con.execute(
                "INSERT INTO jobs (id, kind, state, owner, params, created) VALUES (?, ?, 'training', '', '{}', ?)",
                (job_id, TRAIN, time.time()),
            )
    n = 150
    procs = [_writer_process(str(path), "shared", f"p{k}", n) for k in range(2)]

    def thread_writer(tag: str, own: str) -> None:
        w, mine = JobWriter(path, "shared"), JobWriter(path, own)
        for i in range(n):
            w.point("batch", {"writer": tag, "i": i})
            w.flush()
            mine.set(force=True, done=i + 1)

    threads = [threading.Thread(target=thread_writer, args=(f"t{k}", own)) for k, own in enumerate("ab")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=300) == 0 for p in procs)
    with db.connect() as con:
        rows = con.execute("SELECT data FROM job_points WHERE job_id = 'shared'").fetchall()
    seen = [json.loads(r["data"]) for r in rows]
    for tag in ("p0", "p1", "t0", "t1"):
        assert sorted(p["i"] for p in seen if p["writer"] == tag) == list(range(n)), tag
    assert _row("a")["done"] == n and _row("b")["done"] == n


def test_a_restart_marks_jobs_of_a_gone_process_interrupted_and_keeps_the_queue(dataset, tmp_path, new_registry):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = worker_id(dead.pid)
    assert not worker_alive(gone) and worker_alive(worker_id())
    partial = runs.runs_dir() / "20260101-000000-half-0001"
    partial.mkdir(parents=True)
    (partial / "history.csv").write_text("epoch,loss\n0,1.0\n")  # what a training leaves before its model is saved
    with db.connect(write=True) as con:
        for job_id, state, worker in (
            (partial.name, "training", THREAD_PREFIX + gone),  # a job on a thread of a server that stopped
            ("20260101-000000-alive-0002", "training", worker_id()),
            ("20260101-000000-next-0003", QUEUED, None),
        ):
            con.execute(
                "INSERT INTO jobs (id, kind, state, owner, dataset_id, dataset_name, params, created, started, worker) "
                "VALUES (?, 'train', ?, '', ?, 'colours.zip', ?, ?, ?, ?)",
                (job_id, state, dataset.id, json.dumps({"config": tiny_config(epochs=1).to_dict()}), time.time(),
                 time.time(), worker),
            )  # fmt: skip
    assert recover() == [partial.name]
    assert _row(partial.name)["state"] == INTERRUPTED and not partial.exists()  # nothing half-made stays
    assert _row("20260101-000000-alive-0002")["state"] == "training"  # its process still runs
    with db.connect(write=True) as con:  # let the dispatcher below run the queued one
        con.execute("UPDATE jobs SET state = 'stopped', finished = ? WHERE id = '20260101-000000-alive-0002'",
                    (time.time(),))  # fmt: skip
    reg = new_registry(max_running=1)
    assert reg.wait("20260101-000000-next-0003", timeout=TIMEOUT).state == COMPLETED
    again = reg.restart(partial.name, "ann@example.com")
    assert again.owner == "ann@example.com" and again.config == reg.get(partial.name).config
    assert reg.get(partial.name).restarted_as == again.id
    assert reg.wait(again.id, timeout=TIMEOUT).state == COMPLETED


def test_a_damaged_database_file_is_named_in_a_sentence(tmp_path):
    db.db_path().parent.mkdir(parents=True, exist_ok=True)
    db.db_path().write_bytes(b"this is not a database" * 100)
    with pytest.raises(db.WorkspaceError, match=r"workspace\.db is damaged.*Move the file aside"):
        JobRegistry(dispatch=False).jobs()


def test_a_locked_database_gives_a_sentence_not_a_hang(monkeypatch):
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    db.check()
    holder = db._open(db.db_path())
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(db.WorkspaceError, match="locked by another program"), db.connect(write=True) as con:
            con.execute("UPDATE jobs SET stop = 1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_speed_test_waits_behind_the_work_people_asked_for(new_registry, dataset):
    from core.jobs import SPEED

    reg = new_registry(dispatch=False)
    probe = reg.submit_task(SPEED, {"image_size": 224, "precision": "auto"}, owner="ann@example.com")
    training = reg.submit(dataset, tiny_config(), owner="bob@example.com", name="asked")
    assert reg.ahead(training.id) == 0 and reg.ahead(probe.id) == 1
    assert reg._claim(db.db_path()) == training.id  # the training starts first, though queued later
    assert reg.ahead(probe.id) == 1  # now behind the running training (one slot)


@pytest.mark.parametrize(
    "worker, machine",
    [("vm:12:345", "vm"), ("thread:vm:12:345", "vm"), ("ray:train-1@gpu-node-7:12:345", "gpu-node-7"),
     ("ray:train-1", ""), ("", "")],
)  # fmt: skip
def test_a_job_knows_the_machine_its_process_runs_on(new_registry, dataset, worker, machine):
    reg = new_registry(dispatch=False)
    job = reg.submit(dataset, tiny_config())
    with db.connect(write=True) as con:
        con.execute("UPDATE jobs SET worker = ? WHERE id = ?", (worker, job.id))
    assert reg.get(job.id).machine == machine


def test_a_job_just_handed_to_ray_is_not_taken_for_gone_until_a_minute_has_passed(new_registry, dataset):
    reg = new_registry(dispatch=False)
    job = reg.submit(dataset, tiny_config())
    with db.connect(write=True) as con:
        con.execute("UPDATE jobs SET state = 'starting', started = ?, worker = ? WHERE id = ?",
                    (time.time(), f"ray:{job.id}", job.id))  # fmt: skip
    saved, jobs_module.ray_alive = jobs_module.ray_alive, lambda job_id: False  # the cluster does not list it yet
    try:
        assert recover() == []
        with db.connect(write=True) as con:
            con.execute("UPDATE jobs SET started = ? WHERE id = ?", (time.time() - 61, job.id))
        assert recover() == [job.id]
    finally:
        jobs_module.ray_alive = saved


def test_a_workers_progress_writes_only_progress_columns_never_sql_from_its_keys(new_registry, dataset):
    job = new_registry(dispatch=False).submit(dataset, tiny_config())
    store = jobs_module.Store(db.db_path())
    store.write(job.id, {"stage": "reading", "done": 3, "total": 9}, [])
    hostile = {"owner = 'mallory', state": "x", "owner": "mallory"}
    for key, value in hostile.items():
        with pytest.raises(ValueError, match=r"^Only progress fields may be written"):
            store.write(job.id, {key: value}, [])
    row = store.job(job.id)
    assert row["owner"] == "" and row["stage"] == "reading" and (row["done"], row["total"]) == (3, 9)
