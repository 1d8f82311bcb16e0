"""The bake-off as a job: queued like any task, its progress counted per backbone, its result kept with the job (found
again by a registry of another process, as after a restart), a stop that shows at once and keeps the rows done."""

from __future__ import annotations

import time

import pytest
from conftest import class_entries, make_zip, tiny_config

from core.jobs.kinds import BAKEOFF, KINDS
from core.jobs.registry import JobRegistry
from core.jobs.states import COMPLETED, STOPPED, THREAD
from core.workspace.datasets import open_dataset, save_zip

TIMEOUT = 600


@pytest.fixture
def registry():
    reg = JobRegistry(executor=THREAD)
    yield reg
    reg.close()


@pytest.fixture
def dataset(tmp_path):
    saved = save_zip(make_zip(tmp_path / "colours.zip", class_entries(per_class=6)), owner="ann@example.com")
    return open_dataset(saved.id)


def params(*names: str) -> dict:
    return {"config": tiny_config().to_dict(), "backbones": list(names)}


def test_a_bakeoff_job_keeps_its_result_for_any_process_to_read(registry, dataset):
    assert KINDS[BAKEOFF].label == "backbone bake-off"
    job = registry.submit_task(BAKEOFF, params("mobilenet_v3_small"), owner="ann@example.com", dataset=dataset)
    done = registry.wait(job.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    assert done.metrics == {"backbones": 1, "scored": 1, "recommended": "mobilenet_v3_small"}
    [row] = done.result["rows"]
    assert row["backbone"] == "mobilenet_v3_small" and row["cache_misses"] == 12
    assert done.path_reason.startswith("Done: mobilenet_v3_small ")
    again = JobRegistry(dispatch=False).get(job.id)  # another process's registry, as after a restart: the same
    assert again.result == done.result and again.result["recommendation"]["backbone"] == "mobilenet_v3_small"


def test_a_stopped_bakeoff_says_stopping_at_once_and_ends_with_the_backbones_done(registry, dataset):
    job = registry.submit_task(BAKEOFF, params("mobilenet_v3_small", "vgg16"), owner="ann@example.com",
                               dataset=dataset)  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    while not (snap := registry.get(job.id, points=False)).stage.startswith("backbone 2 of 2 (vgg16)"):
        assert not snap.finished, snap.error
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert snap.stage.startswith("backbone 2 of 2 (vgg16) · ") and snap.total >= 1
    registry.stop(job.id, "ann@example.com")
    assert registry.get(job.id, points=False).stopping  # "Stopping…" on every page at once
    done = registry.wait(job.id, timeout=TIMEOUT)
    assert done.state == STOPPED, done.error
    assert [r["backbone"] for r in done.result["rows"]] == ["mobilenet_v3_small"]
    assert done.result["status"] == "stopped" and done.metrics["backbones"] == 1
