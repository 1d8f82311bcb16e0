"""What the previous layout of the code saved still opens: a saved dataset, its workspace database and a run trained
on it by the code as it was before core was reorganised into subpackages (commit PREVIOUS_LAYOUT, taken from this
repository's history and run in a process of its own)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT, class_entries, make_zip

PREVIOUS_LAYOUT = "aa78a7e588abefd605aeba83dedf590e46520637"  # the last commit of the flat core/ (38 modules)


def _previous_tree(dest: Path) -> Path:
    """The previous layout's files, from git (a clone has its history; CI must not skip this)."""
    found = subprocess.run(["git", "cat-file", "-e", f"{PREVIOUS_LAYOUT}^{{commit}}"], cwd=ROOT, capture_output=True)
    if found.returncode != 0:
        if os.environ.get("CI") or os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"the commit {PREVIOUS_LAYOUT} is not in this clone's history")
        pytest.skip(f"the commit {PREVIOUS_LAYOUT} is not in this clone (a shallow copy)")
    archive = subprocess.run(["git", "archive", PREVIOUS_LAYOUT, "core"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    assert (dest / "core" / "jobs.py").is_file() and not (dest / "core" / "jobs").is_dir()  # really the old layout
    return dest


@pytest.fixture(scope="module")
def saved_before(tmp_path_factory):
    """A dataset saved and a run trained on it by the previous layout's code, in folders of their own."""
    base = tmp_path_factory.mktemp("previous")
    old = _previous_tree(base / "code")
    zip_path = make_zip(base / "colours.zip", class_entries(per_class=8))
    env = {**os.environ, "PYTHONPATH": str(old), "CLASSIFIER_RUNS_DIR": str(base / "runs"),
           "CLASSIFIER_WORK_DIR": str(base / "work"), "CLASSIFIER_CACHE_DIR": str(base / "cache"),
           "KERAS_HOME": str(base / "keras")}  # fmt: skip
    save = "from core.datasets import save_zip; import sys; print(save_zip(sys.argv[1]).id)"
    done = subprocess.run([sys.executable, "-c", save, str(zip_path)], cwd=base, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    dataset_id = done.stdout.strip().splitlines()[-1]
    train = [sys.executable, "-m", "core", "train", dataset_id, "--out", str(base / "runs" / "old-run"),
             "--weights", "none", "--head", "gap", "--image-size", "32", "--unfreeze", "3", "--epochs", "1",
             "--batch-size", "4", "--optimizer", "adam", "--precision", "float32"]  # fmt: skip
    done = subprocess.run(train, cwd=base, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return base, dataset_id


@pytest.fixture
def same_folders(saved_before, monkeypatch):
    base, dataset_id = saved_before
    for var, sub in (
        ("CLASSIFIER_RUNS_DIR", "runs"),
        ("CLASSIFIER_WORK_DIR", "work"),
        ("CLASSIFIER_CACHE_DIR", "cache"),
    ):
        monkeypatch.setenv(var, str(base / sub))
    monkeypatch.delenv("CLASSIFIER_DB", raising=False)
    return base, dataset_id


def test_a_dataset_saved_by_the_previous_layout_lists_and_opens(same_folders):
    from core.workspace import datasets, records

    _, dataset_id = same_folders
    assert [s.id for s in records.list_datasets()] == [dataset_id]
    ds = datasets.open_dataset(dataset_id)
    assert ds.classes == ["blue", "red"] and len(ds.items) == 16 and Path(ds.store).name == dataset_id


def test_a_run_trained_by_the_previous_layout_loads_answers_and_is_evaluated(same_folders):
    from conftest import COLORS, jpeg_bytes

    from core.evaluate.evaluation import evaluate_run
    from core.model.predict import load_run, predict
    from core.publish.card import facts
    from core.workspace import access, runs

    _, dataset_id = same_folders
    info = runs.find_run("old-run")
    assert info is not None and info.dataset_id == dataset_id
    run = load_run(info.path)
    answers = predict(run, [jpeg_bytes(COLORS["red"], (40, 30), seed=7)], names=["red.jpg"])
    assert answers[0].ok and {c for c, _ in answers[0].top} == {"red", "blue"}
    ev = evaluate_run(info.path, user=access.OPERATOR)
    assert ev.images > 0 and 0.0 <= ev.accuracy <= 1.0
    assert facts.facts(info.path)["model"]["sha256"]
