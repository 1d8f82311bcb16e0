"""Jobs in the workspace database: real trainings through the registry, concurrent progress writers, a restart
that finds interrupted and queued jobs, stops and who may ask for them; the database's faults in words (a full
disk, a folder or file the server may not write, damage), its migration, heartbeats, a run saved whole by a
worker that died before its end, the live view's new points and the pruning of old jobs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, class_entries, make_zip, tiny_config

from core.jobs import recovery
from core.jobs import registry as jobs_module
from core.jobs import store as job_store
from core.jobs.kinds import TRAIN
from core.jobs.recovery import recover, worker_alive
from core.jobs.registry import JobRegistry
from core.jobs.states import CANCELLED, COMPLETED, INTERRUPTED, QUEUED, STOPPED, THREAD, THREAD_PREFIX
from core.jobs.store import JobWriter, worker_id
from core.workspace import access, db, runs
from core.workspace.datasets import open_dataset, save_zip

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
    code = f"from core.jobs.registry import JobRegistry; JobRegistry(dispatch=False).stop({job.id!r})"
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
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@example.com")
    reg.stop(job.id, "Boss@Example.com")
    assert reg.get(job.id, points=False).state == CANCELLED
    reg.stop(blocker.id, "ann@example.com")
    assert reg.wait(blocker.id, timeout=TIMEOUT).finished


def _writer_process(path: str, job_id: str, tag: str, n: int) -> None:
    code = (
        "import sys; from pathlib import Path; from core.jobs.store import JobWriter\n"
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
    # The same settings, on the version of the dataset it opens now: a job queued before dataset versions named
    # none, and every training is pinned to the version it is given (core.workspace.versions).
    assert again.owner == "ann@example.com" and again.config.dataset_version == dataset.version == 1
    assert again.config == dataclasses.replace(reg.get(partial.name).config, dataset_version=1)
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
    from core.jobs.kinds import SPEED

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

    def unlisted(job_id: str) -> bool:  # the cluster does not list it yet
        return False

    assert recover(ray_alive=unlisted) == []
    with db.connect(write=True) as con:
        con.execute("UPDATE jobs SET started = ? WHERE id = ?", (time.time() - 61, job.id))
    assert recover(ray_alive=unlisted) == [job.id]


def test_a_workers_progress_writes_only_progress_columns_never_sql_from_its_keys(new_registry, dataset):
    job = new_registry(dispatch=False).submit(dataset, tiny_config())
    store = job_store.Store(db.db_path())
    store.write(job.id, {"stage": "reading", "done": 3, "total": 9}, [])
    hostile = {"owner = 'mallory', state": "x", "owner": "mallory"}
    for key, value in hostile.items():
        with pytest.raises(ValueError, match=r"^Only progress fields may be written"):
            store.write(job.id, {key: value}, [])
    row = store.job(job.id)
    assert row["owner"] == "" and row["stage"] == "reading" and (row["done"], row["total"]) == (3, 9)


# ---------------------------------------------------------------------------------------------- faults in words


def _tight(monkeypatch) -> None:
    """Every connection may not grow the file by one page: SQLite's own SQLITE_FULL, as on a full disk."""
    real = db._open

    def tight(path):
        con = real(path)
        con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0]}")
        return con

    monkeypatch.setattr(db, "_open", tight)


def test_a_full_disk_says_so_and_what_to_do_not_that_the_database_is_damaged(monkeypatch):
    db.check()
    _tight(monkeypatch)
    with pytest.raises(db.WorkspaceError) as caught, db.connect(write=True) as con:
        con.executemany("INSERT INTO job_points (job_id, kind, data) VALUES ('j', 'batch', ?)", [("x" * 4000,)] * 50)
    text = str(caught.value)
    assert text.startswith(f"The disk holding the workspace database {db.db_path()} is full (the disk mounted at ")
    assert "free space on it, or set CLASSIFIER_WORK_DIR to a folder on a larger disk" in text
    assert "damaged" not in text


def _as_server_user(fn) -> str:
    """``fn()`` in a child process of an ordinary user (nobody, when the tests run as root, for whom no permission
    stops a write); what it returns or the error it raises, as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only code already loaded, and out through os._exit whatever happens
        os.close(read)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            out = str(fn())
        except BaseException as exc:
            out = f"{type(exc).__name__}: {exc}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def _write_to(path):
    def write() -> str:
        with db.connect(write=True, path=path) as con:
            con.execute("UPDATE jobs SET stop = 1")
        return "written"

    return write


@pytest.fixture
def shared_folder():
    """A folder an ordinary user can reach (pytest's own are root's alone when the tests run as root)."""
    base = Path(tempfile.mkdtemp(prefix="classifier-perm-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    for p in base.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(base)


def _give(path, *more) -> None:
    """Make ``path`` (and ``more``) the ordinary user's, when the tests run as root."""
    for p in (path, *more):
        if os.geteuid() == 0 and p.exists():
            os.chown(p, 65534, 65534)


def test_a_folder_the_server_may_not_write_says_to_make_it_writable(shared_folder):
    folder = shared_folder / "work"
    folder.mkdir()
    _give(folder)
    folder.chmod(0o555)
    out = _as_server_user(_write_to(folder / "workspace.db"))
    assert out.startswith(f"WorkspaceError: The workspace database {folder / 'workspace.db'} cannot be written (")
    assert f"make the folder {folder} writable by the server's user (" in out and "damaged" not in out
    # A database made earlier, in a folder made read-only since: SQLite cannot write its journal beside it.
    path = shared_folder / "later" / "workspace.db"
    with db.connect(write=True, path=path):
        pass
    _give(path.parent, path, *path.parent.glob("workspace.db-*"))
    assert _as_server_user(_write_to(path)) == "written"
    path.parent.chmod(0o555)
    out = _as_server_user(_write_to(path))
    assert f"make the folder {path.parent} writable by the server's user (" in out and "damaged" not in out


def test_a_read_only_database_file_says_to_make_the_file_writable(shared_folder):
    path = shared_folder / "workspace.db"
    with db.connect(write=True, path=path):
        pass
    _give(shared_folder, path, *shared_folder.glob("workspace.db-*"))
    path.chmod(0o444)
    out = _as_server_user(_write_to(path))
    assert out.startswith(f"WorkspaceError: The workspace database {path} cannot be written (attempt to write a ")
    assert f"make the file {path} writable by the server's user (" in out and "damaged" not in out


def test_a_folder_in_place_of_the_database_file_is_named_as_such():
    db.db_path().mkdir(parents=True)
    with pytest.raises(db.WorkspaceError, match=r"workspace\.db is a folder, not a file: move it aside"):
        db.check()


def test_a_database_of_the_first_version_gets_the_new_columns_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, owner TEXT NOT NULL, "
        "dataset_id TEXT, dataset_name TEXT NOT NULL DEFAULT '', params TEXT NOT NULL, created REAL NOT NULL, "
        "started REAL, finished REAL, stage TEXT NOT NULL DEFAULT '', done INTEGER NOT NULL DEFAULT 0, "
        "total INTEGER NOT NULL DEFAULT 0, epoch INTEGER NOT NULL DEFAULT 0, epochs INTEGER NOT NULL DEFAULT 0, "
        "batch INTEGER NOT NULL DEFAULT 0, batches INTEGER NOT NULL DEFAULT 0, eta REAL, "
        "path_reason TEXT NOT NULL DEFAULT '', phase2_start INTEGER, error TEXT, metrics TEXT NOT NULL DEFAULT '{}', "
        "result TEXT, stop INTEGER NOT NULL DEFAULT 0, worker TEXT, restarted_as TEXT);"
        "INSERT INTO jobs (id, kind, state, owner, params, created) VALUES ('old-job', 'train', 'completed', '', "
        "'{}', 1.0);"
        "PRAGMA user_version = 1;"
    )
    old.close()
    with db.connect(write=True, path=path) as con:
        con.execute("UPDATE jobs SET heartbeat = 5.0, stop_time = 6.0 WHERE id = 'old-job'")
    with db.connect(path=path) as con:
        row = con.execute("SELECT id, heartbeat, stop_time FROM jobs").fetchone()
        version = con.execute("PRAGMA user_version").fetchone()[0]
    assert tuple(row) == ("old-job", 5.0, 6.0) and version == db.SCHEMA_VERSION == 2


# ---------------------------------------------------------------------------------------------- heartbeats, ends


def _insert(job_id: str, state: str = "training", kind: str = TRAIN, **columns) -> None:
    values = {"id": job_id, "kind": kind, "state": state, "owner": "", "dataset_name": "colours.zip",
              "params": json.dumps({"config": tiny_config(epochs=2).to_dict()}), "created": time.time(),
              "started": time.time(), **columns}  # fmt: skip
    with db.connect(write=True) as con:
        con.execute(f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    tuple(values.values()))  # fmt: skip


def test_a_job_s_heartbeat_goes_on_through_a_long_step_without_progress(monkeypatch):
    monkeypatch.setenv("CLASSIFIER_HEARTBEAT_SECONDS", "1")  # a beat every 0.25 s
    _insert("beating", heartbeat=1.0)
    store = job_store.Store(db.db_path())
    seen = set()
    with job_store.Heartbeat(store, "beating"):
        deadline = time.monotonic() + 60
        while len(seen) < 3:  # no progress is written meanwhile: the beats are the thread's
            seen.add(store.job("beating")["heartbeat"])
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert min(seen - {1.0}) > time.time() - 60


def _dead_worker() -> str:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return worker_id(dead.pid)


def _saved_run(job_id: str):
    """A run folder as a training leaves it once saved whole: its files, then its marker last."""
    folder = runs.runs_dir() / job_id
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"PK model")
    runs.write_json(folder / "classes.json", ["red", "blue"])
    runs.write_json(folder / "config.json", tiny_config(epochs=2).to_dict())
    runs.write_json(folder / "metrics.json", {"val_accuracy": 0.5, "epochs_completed": 2})
    runs.write_json(folder / runs.MARKER, {"format": runs.RUN_FORMAT, "version": runs.RUN_VERSION,
                                           "status": "completed", "finished": "2026-01-01T00:00:00"})  # fmt: skip
    return folder


def test_a_worker_killed_after_saving_its_run_leaves_the_run_and_an_interrupted_job_that_says_so(monkeypatch):
    saved, died = "20260101-000000-saved-0001", "20260101-000000-reaped-0002"
    for job_id in (saved, died):
        _saved_run(job_id)
        _insert(job_id, worker=_dead_worker(), heartbeat=time.time())
    assert recover() == [saved, died]
    row = _row(saved)
    assert row["state"] == INTERRUPTED
    assert row["error"] == (f"The training process ended unexpectedly, after its model was saved but before it "
                            f"recorded its end: the run {saved} is complete, on the Runs page.")  # fmt: skip
    assert runs.find_run(saved) is not None  # kept whole, and listed
    with db.connect() as con:
        assert con.execute("SELECT count(*) FROM runs WHERE id = ?", (saved,)).fetchone()[0] == 1
    # The same end seen by the process that waited for the worker: how it ended is named too.
    with db.connect(write=True) as con:
        con.execute("UPDATE jobs SET state = 'training', finished = NULL WHERE id = ?", (died,))
    recovery.ended_unexpectedly(db.db_path(), died, "it was killed by SIGKILL")
    assert _row(died)["error"].startswith("The training process ended unexpectedly: it was killed by SIGKILL, after")
    # The Train page shows it interrupted, in those words, with its model to use; nothing crashes.
    from pagetest import assert_clean, open_app, texts

    monkeypatch.setattr(jobs_module, "_registry", JobRegistry(executor=THREAD, dispatch=False))
    at = open_app("pages/train.py", query={"job": saved})
    assert_clean(at)
    assert any("after its model was saved but before it recorded its end" in w for w in texts(at.warning))
    assert "Classify images with its saved model" in [link.proto.label for link in at.get("page_link")]


def test_a_job_s_chart_points_are_read_once_each_by_the_live_view(dataset, new_registry, monkeypatch):
    from ui.job_view import with_new_points

    reg = new_registry(dispatch=False)
    monkeypatch.setattr(jobs_module, "_registry", reg)
    job = reg.submit(dataset, tiny_config())
    writer = JobWriter(db.db_path(), job.id)
    for i in range(3):
        writer.point("batch", {"step": i, "loss": 1.0})
    writer.point("epoch", {"epoch": 1, "loss": 1.0})
    writer.flush()
    asked, real_get = [], reg.get
    monkeypatch.setattr(reg, "get", lambda job_id, points=True, since=0: asked.append(since) or real_get(
        job_id, points, since))  # fmt: skip
    seen: dict = {}
    first = with_new_points(job.id, seen)
    assert [p["step"] for p in first.batch_losses] == [0, 1, 2] and len(first.epoch_logs) == 1
    writer.point("batch", {"step": 3, "loss": 0.5})
    writer.flush()
    second = with_new_points(job.id, seen)
    assert [p["step"] for p in second.batch_losses] == [0, 1, 2, 3] and len(second.epoch_logs) == 1
    assert asked == [0, first.last_seq] and second.last_seq > first.last_seq
    assert real_get(job.id, since=second.last_seq).batch_losses == []  # nothing newer: nothing read


def test_old_finished_jobs_are_pruned_when_the_registry_starts_but_a_training_s_with_a_run_stays(new_registry):
    old = time.time() - 31 * 24 * 3600
    _saved_run("20250101-000000-kept-0001")
    for job_id, kind, state, finished in (
        ("20250101-000000-kept-0001", TRAIN, COMPLETED, old),  # its run is still there: its charts are the run's
        ("20250101-000000-gone-0002", TRAIN, "failed", old),  # no run: nothing to keep
        ("evaluate-old", "evaluate", COMPLETED, old),
        ("evaluate-new", "evaluate", COMPLETED, time.time()),
        ("evaluate-running", "evaluate", "working", None),
    ):
        _insert(job_id, state, kind, finished=finished, created=old, worker=worker_id())
        with db.connect(write=True) as con:
            con.execute("INSERT INTO job_points (job_id, kind, data) VALUES (?, 'batch', '{}')", (job_id,))
    new_registry(dispatch=False).jobs()
    with db.connect() as con:
        left = {r["id"] for r in con.execute("SELECT id FROM jobs")}
        points = {r["job_id"] for r in con.execute("SELECT job_id FROM job_points")}
    assert left == points == {"20250101-000000-kept-0001", "evaluate-new", "evaluate-running"}
