"""The Jobs page and the sidebar: every job on the server from any session, Stop for whoever may, Restart."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from pagetest import APP, JOB_TIMEOUT, assert_clean, button, load, open_app, texts
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.jobs import store
from core.jobs.registry import registry
from core.jobs.states import CANCELLED, COMPLETED, INTERRUPTED, QUEUED
from core.workspace import db


def long_config() -> TrainConfig:
    return TrainConfig(weights="none", image_size=32, epochs=500)


def test_a_new_session_sees_every_job_and_stops_one_after_naming_it(tmp_path, monkeypatch, fast_training):
    monkeypatch.setattr(registry(), "max_running", 1)
    ds = load(tmp_path)
    running = registry().submit(ds, long_config(), owner="", name="running")
    queued = registry().submit(ds, long_config(), owner="", name="queued")
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while registry().get(running.id, points=False).state == QUEUED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        at = open_app("pages/jobs.py")  # no address, no session: a colleague's new tab
        assert texts(at.title) == ["Jobs"]
        cards = " ".join(texts(at.markdown))
        assert running.id in cards and queued.id in cards and "colours.zip" in cards
        home = open_app()  # the sidebar on any page (AppTest keeps it for the first page only)
        assert [link.proto.label for link in home.sidebar.get("page_link")] == ["1 job running, 1 queued"]
        assert "Queued: 1 job ahead." in texts(at.caption)
        # Not this session's job: Stop names it and asks once.
        stop = [p for p in at.get("popover") if p.proto.popover.label == "Cancel"]
        assert len(stop) == 1
        assert any(f"Cancel the training **{queued.id}** on colours.zip, started by a guest?" in m
                   for m in texts(at.markdown))  # fmt: skip
        button(at, "Cancel it").click().run()
        assert_clean(at)
        assert registry().get(queued.id).state == CANCELLED
        assert "cancelled" in " ".join(texts(at.markdown))
    finally:
        registry().stop(running.id)
        registry().stop(queued.id)
        registry().wait(running.id, timeout=JOB_TIMEOUT)


def test_a_signed_in_user_sees_others_jobs_without_stop(tmp_path, monkeypatch, fast_training):
    import ui.session

    monkeypatch.setattr(registry(), "max_running", 1)
    ds = load(tmp_path)
    job = registry().submit(ds, long_config(), owner="ann@example.com", name="anns")
    try:
        monkeypatch.setattr(ui.session, "user", lambda: "bob@example.com")
        at = open_app("pages/jobs.py")
        assert "Started by ann@example.com: only they or an admin may stop it." in texts(at.caption)
        assert not [b for b in at.button if b.label in ("Stop", "Stop it", "Cancel", "Cancel it")]
        assert not [p for p in at.get("popover") if p.proto.popover.label in ("Stop", "Cancel")]
    finally:
        registry().stop(job.id, "ann@example.com")
        registry().wait(job.id, timeout=JOB_TIMEOUT)


def test_an_interrupted_job_offers_a_restart_that_queues_the_same_settings(tmp_path, fast_training):
    ds = load(tmp_path)
    config = TrainConfig(weights="none", image_size=32, epochs=2)
    with db.connect(write=True) as con:  # what a server that stopped mid-run leaves behind
        con.execute(
            "INSERT INTO jobs (id, kind, state, owner, dataset_id, dataset_name, params, created, started, finished, "
            "epochs, error) VALUES ('20260101-000000-colours-0001', 'train', ?, '', ?, 'colours.zip', ?, ?, ?, ?, 2, "
            "'The server stopped while this job ran; nothing of it was saved.')",
            (INTERRUPTED, ds.id, json.dumps({"config": config.to_dict()}), time.time(), time.time(), time.time()),
        )
        con.execute(
            "INSERT INTO job_points (job_id, kind, data) VALUES ('20260101-000000-colours-0001', 'epoch', ?)",
            (json.dumps({"epoch": 1, "loss": 0.9, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}),),
        )
    at = open_app("pages/train.py", query={"job": "20260101-000000-colours-0001"})
    assert any(w.startswith("Interrupted: the server stopped while this training ran, after 1 whole epoch of 2")
               for w in texts(at.warning))  # fmt: skip
    button(at, "Restart it").click().run()
    assert_clean(at)
    new_id = at.query_params["job"]
    assert new_id != "20260101-000000-colours-0001"
    new = registry().wait(new_id, timeout=JOB_TIMEOUT)
    # the same settings, pinned to the dataset version it trains on (the only one: 1)
    assert new.state == COMPLETED and new.config == replace(config, dataset_version=1) and new.dataset_id == ds.id
    assert registry().get("20260101-000000-colours-0001").restarted_as == new_id
    jobs = open_app("pages/jobs.py")
    assert not [b for b in jobs.button if b.label == "Restart it"]  # restarted once: the old one links to it
    assert QUEUED not in [j.state for j in registry().jobs()]


def test_a_damaged_workspace_database_is_a_sentence_naming_the_file(tmp_path):
    path = db.db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"definitely not sqlite" * 500)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"The workspace database {path} is damaged (file is not a database). Move the file aside and reload: a new "
        "one is made and the saved runs and datasets are found again in their folders (the job history and the "
        "saved Train forms are lost)."
    ]


def test_a_job_on_another_machine_says_where_it_runs(tmp_path, fast_training):
    ds = load(tmp_path)
    job = registry().submit(ds, long_config(), owner="", name="far")
    registry().stop(job.id)  # cancelled at once (or stopped): a finished job keeps the machine it ran on
    registry().wait(job.id, timeout=JOB_TIMEOUT)
    with db.connect(write=True) as con:
        con.execute("UPDATE jobs SET worker = ? WHERE id = ?", (f"ray:{job.id}@gpu-node-7:4242:99", job.id))
    at = open_app("pages/jobs.py")
    assert_clean(at)
    card = next(m for m in texts(at.markdown) if job.id in m)
    assert card.endswith("· on gpu-node-7")
    with db.connect(write=True) as con:  # this machine: nothing to say
        con.execute("UPDATE jobs SET worker = ? WHERE id = ?", (store.worker_id(), job.id))
    at = open_app("pages/jobs.py")
    assert " · on " not in next(m for m in texts(at.markdown) if job.id in m)
