"""A run records the dataset version it trained on, a queued job keeps the version it was given, and training again
on the newest version is one call (``JobRegistry.retrain``), for the run's owner or an admin."""

from __future__ import annotations

import json

import pytest
from conftest import COLORS, class_entries, jpeg_bytes, make_zip, tiny_config

from core.jobs.registry import JobRegistry, retrain_inputs
from core.jobs.states import COMPLETED, THREAD
from core.publish.card import render
from core.util.errors import UserError
from core.workspace import runs, versions
from core.workspace.access import NotAllowed
from core.workspace.datasets import open_dataset, save_zip

TIMEOUT = 600


@pytest.fixture
def reg():
    made = JobRegistry(executor=THREAD, max_running=1)
    yield made
    made.close()


def test_a_run_pinned_to_version_1_retrains_on_the_newest_with_one_call(tmp_path, reg, monkeypatch):
    saved = save_zip(make_zip(tmp_path / "colours.zip", class_entries(per_class=6)), owner="ann@example.com")
    at_1 = open_dataset(saved.id)
    assert at_1.version == 1
    # A version committed after the page opened the dataset (say, while the job waits): the job keeps version 1.
    greens = [(jpeg_bytes(COLORS["green"], seed=50 + i), f"g{i}.jpg", "green") for i in range(6)]
    versions.commit(saved.id, "ann@example.com", "greens", add=greens)
    job = reg.submit(at_1, tiny_config(epochs=1), owner="ann@example.com", name="colours")
    assert job.params["dataset_version"] == 1 and job.config.dataset_version == 1
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    first = runs.find_run(job.id)
    assert first.config.dataset_version == 1 and first.dataset_version == 1 and len(first.classes) == 2
    assert json.loads((first.path / "run.json").read_text())["dataset_version"] == 1
    assert "Dataset: colours.zip, version 1." in render.markdown(first.path, image_name=None)

    with pytest.raises(NotAllowed, match=r"Only ann@example\.com or an admin may train the run"):
        reg.retrain(first.id, "bob@example.com")
    again = reg.retrain(first.id, "ann@example.com")  # newest=True: the one call
    assert again.config.dataset_version == 2 and again.owner == "ann@example.com"
    done = reg.wait(again.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    second = runs.find_run(again.id)
    assert second.dataset_version == 2 and second.classes == ["blue", "red", "green"]
    assert {k: v for k, v in second.config.to_dict().items() if k != "dataset_version"} == {
        k: v for k, v in first.config.to_dict().items() if k != "dataset_version"
    }
    split = json.loads((second.path / "split.json").read_text())
    assert any(p.startswith(".added/") for p in split["train"] + split["val"])
    assert "Dataset: colours.zip, version 2." in render.markdown(second.path, image_name=None)

    # The same version again, and an admin may too.
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@example.com")
    ds, config = retrain_inputs(second.id, "boss@example.com", newest=False)
    assert ds.version == config.dataset_version == 2
    ds, config = retrain_inputs(first.id, "boss@example.com", newest=False)
    assert ds.version == config.dataset_version == 1 and len(ds.classes) == 2


def test_retraining_a_run_without_a_saved_dataset_or_an_unknown_run_is_a_sentence(trained_run, monkeypatch):
    with pytest.raises(UserError, match="There is no run 'nope'"):
        retrain_inputs("nope")
    with pytest.raises(UserError, match="was trained from a zip path, not a dataset saved on this server"):
        retrain_inputs(runs.read_run(trained_run))
