"""Suspected label errors (core.evaluate.label_issues): cleanlab on out-of-fold predictions from a run's frozen
features, decisions saved with the dataset, exclusions applied to the next training, and the CLI.

One learnable test-made set (red, green and blue noisy images, 40 per class) with 10 % of its labels flipped on
purpose (every tenth image of a class filed in another class's folder), saved in a workspace of the module's own and
trained once (VGG16 from random weights, 32 px, the gap head: its frozen prefix ends at the pooled features).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import COLORS, assert_user_error, jpeg_bytes, make_zip, run_cli, tiny_config

from core.config import TrainConfig
from core.evaluate import label_issues
from core.evaluate.label_issues import find_label_issues, fold_count, load_label_issues, out_of_fold_probabilities
from core.util.errors import UserError
from core.workspace.decisions import DECISIONS_FILE, EXCLUDE, KEEP, apply_exclusions, decide, decisions, excluded

CLASSES = ("red", "green", "blue")
PER_CLASS = 40
MODULE_ENV = {
    "CLASSIFIER_WORK_DIR": "work",
    "CLASSIFIER_RUNS_DIR": "runs",
    "CLASSIFIER_CACHE_DIR": "cache",
    "KERAS_HOME": "keras",
}  # fmt: skip  (the names run_cli gives them under its env_dir)


def noisy_entries() -> tuple[dict[str, bytes], set[str]]:
    """The zip's entries and the paths (inside the dataset) of the images filed under a wrong class."""
    entries, flipped = {}, set()
    for k, cls in enumerate(CLASSES):
        for i in range(PER_CLASS):
            folder = cls
            if i % 10 == 0:  # 4 of 40: 10 %, sent to either other class
                folder = CLASSES[(k + 1 + (i // 10) % 2) % len(CLASSES)]
                flipped.add(f"{folder}/{cls[0]}{i}.jpg")
            entries[f"{folder}/{cls[0]}{i}.jpg"] = jpeg_bytes(COLORS[cls], (40, 40), seed=100 * k + i)
    return entries, flipped


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The saved noisy dataset, a run trained on it and the search's result, in the module's own folders."""
    base = tmp_path_factory.mktemp("label-issues")
    entries, flipped = noisy_entries()
    with pytest.MonkeyPatch.context() as mp:
        for name, folder in MODULE_ENV.items():
            mp.setenv(name, str(base / folder))
        from core.train.training import train
        from core.workspace.datasets import open_dataset, save_zip

        zip_path = make_zip(base / "noisy.zip", entries)
        ds = open_dataset(save_zip(zip_path).id)
        run = train(ds, tiny_config(epochs=1), base / "runs" / "20200101-000000-noisy-abcd")
        stages = []
        found = find_label_issues(run.run_dir, progress=lambda stage, done, total: stages.append((stage, done, total)))
    return {"base": base, "zip": zip_path, "flipped": flipped, "run": run.run_dir, "found": found, "stages": stages,
            "dataset_id": ds.id}  # fmt: skip


def test_cleanlab_finds_the_flipped_labels(searched):
    found, flipped = searched["found"], searched["flipped"]
    suspects = {s["file"] for s in found.suspects}
    hits = suspects & flipped
    recall, precision = len(hits) / len(flipped), len(hits) / max(len(suspects), 1)
    print(f"label issues: recall {recall:.2f} ({len(hits)}/{len(flipped)}), precision {precision:.2f}")
    assert recall >= 0.8 and precision >= 0.5, (recall, precision, sorted(suspects))
    # Every training and validation image was searched, with the frozen prefix's pooled features.
    assert found.images == len(CLASSES) * PER_CLASS and found.classes == ["blue", "green", "red"]
    assert not found.fine_tuned and "'gap'" in found.features and found.folds == 5
    for s in found.suspects:
        if s["file"] in flipped:  # the suggested class is the colour the image really is
            assert s["suggested"][0] == Path(s["file"]).name[0], s
            assert s["given"] == Path(s["file"]).parent.name
            assert s["confidence"] > s["given_probability"]
    # Ranked by self-confidence: the given class's probability rises down the list.
    given = [s["given_probability"] for s in found.suspects]
    assert given == sorted(given)
    # Progress in counts: images through the frozen layers, then folds.
    assert ("features", 120, 120) in searched["stages"] and searched["stages"][-1] == ("folds", 5, 5)
    saved = load_label_issues(searched["run"])
    assert saved == found and json.loads((searched["run"] / label_issues.FILE).read_text())["format"] == 1


def test_out_of_fold_probabilities_score_each_image_without_it():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = rng.normal(size=(40, 3)) + y[:, None] * 4.0
    probs, k = out_of_fold_probabilities(x, y, num_classes=3, folds=5)
    assert k == 5 and probs.shape == (40, 3)
    assert np.allclose(probs.sum(axis=1), 1) and not probs[:, 2].any()  # a class with no images gets nothing
    assert (probs.argmax(axis=1) == y).mean() > 0.9
    # A tiny class means fewer folds; fewer than 2 folds is refused.
    assert fold_count(np.array([0] * 10 + [1] * 3), 5) == 3
    with pytest.raises(UserError, match="at least 2 folds"):
        fold_count(y, 1)


# ---------------------------------------------------------------------------------------------- decisions, training


def test_decisions_are_saved_with_the_dataset_and_can_be_changed_back(tmp_path):
    from core.workspace.datasets import open_dataset, save_zip
    from core.workspace.records import datasets_dir

    entries, _ = noisy_entries()
    ds = open_dataset(save_zip(make_zip(tmp_path / "noisy.zip", entries)).id)
    assert decisions(ds.id) == {} and excluded(ds.id) == []
    decide(ds.id, "green/r0.jpg", EXCLUDE, user="ann@example.com", given="green", suggested="red")
    decide(ds.id, "blue/r10.jpg", KEEP)
    decide(ds.id, "red/g0.jpg", EXCLUDE)
    assert excluded(ds.id) == ["green/r0.jpg", "red/g0.jpg"]
    assert decisions(ds.id)["green/r0.jpg"]["by"] == "ann@example.com"
    decide(ds.id, "red/g0.jpg", KEEP)  # changed back
    decide(ds.id, "blue/r10.jpg", None)  # forgotten
    assert excluded(ds.id) == ["green/r0.jpg"] and set(decisions(ds.id)) == {"green/r0.jpg", "red/g0.jpg"}
    assert (datasets_dir() / ds.id / DECISIONS_FILE).is_file()  # beside dataset.json: with the dataset
    with pytest.raises(UserError, match="saved with a dataset"):
        decide("", "red/g0.jpg", EXCLUDE)
    with pytest.raises(ValueError, match="decision"):
        decide(ds.id, "red/g0.jpg", "maybe")


def test_apply_exclusions_leaves_out_only_images_of_the_dataset(tmp_path):
    from core.data.dataset import load_dataset

    entries, _ = noisy_entries()
    ds = load_dataset(make_zip(tmp_path / "noisy.zip", entries), tmp_path / "work")  # not saved: config only
    config = TrainConfig(exclude=("red/g10.jpg", "red/nowhere.jpg"))
    kept, recorded = apply_exclusions(ds, config)
    assert recorded.exclude == ("red/g10.jpg",) and len(kept.items) == len(ds.items) - 1
    assert apply_exclusions(ds, TrainConfig(exclude=("gone.jpg",)))[1].exclude == ()
    everything_blue = tuple(it.path for it in ds.items if ds.classes[it.label] == "blue")
    with pytest.raises(UserError, match="fewer than 2 images of blue"):
        apply_exclusions(ds, TrainConfig(exclude=everything_blue))


def test_a_config_saved_before_exclusions_existed_loads_with_none():
    old = TrainConfig().to_dict()
    del old["exclude"]
    assert TrainConfig.from_dict(old).exclude == ()
    assert TrainConfig.from_dict({**old, "exclude": ["a/1.jpg"]}).exclude == ("a/1.jpg",)
    assert TrainConfig.from_dict(json.loads(json.dumps(TrainConfig(exclude=("b.jpg",)).to_dict()))).exclude == (
        "b.jpg",
    )


def test_exclusions_apply_to_the_next_training_and_the_search_runs_as_a_job(searched, tmp_path):
    """Decide on the suspects, train the dataset again as the Train page does (a job), and search that run as the
    Evaluate page does (a job): the excluded images are out of both splits and recorded in config.json."""
    from core.jobs import kinds, states
    from core.jobs import registry as jobs
    from core.workspace.datasets import open_dataset, save_zip

    ds = open_dataset(save_zip(searched["zip"]).id)  # the same zip in this test's workspace: the same dataset
    suspects = searched["found"].suspects
    for s in suspects:
        decide(ds.id, s["file"], EXCLUDE, given=s["given"], suggested=s["suggested"])
    decide(ds.id, suspects[0]["file"], KEEP)  # changed back: trained on after all
    wanted = sorted(s["file"] for s in suspects[1:])

    registry = jobs._registry = jobs.JobRegistry(executor=states.THREAD)
    job = registry.submit(ds, tiny_config(epochs=1))
    done = registry.wait(job.id, timeout=600)
    assert done.state == states.COMPLETED, done.error
    run_dir = done.run_dir
    assert json.loads((run_dir / "config.json").read_text())["exclude"] == wanted
    assert json.loads((run_dir / "metrics.json").read_text())["excluded_images"] == len(wanted)
    split = json.loads((run_dir / "split.json").read_text())
    assert not set(wanted) & set(split["train"] + split["val"])
    assert suspects[0]["file"] in split["train"] + split["val"]
    assert len(split["train"]) + len(split["val"]) == len(CLASSES) * PER_CLASS - len(wanted)

    search = registry.submit_task(kinds.LABEL_ISSUES, {"run": run_dir.name}, dataset=ds)
    assert search.label == "label-error search"
    done = registry.wait(search.id, timeout=600)
    assert done.state == states.COMPLETED, done.error
    again = load_label_issues(run_dir)
    assert again.images == len(CLASSES) * PER_CLASS - len(wanted) and done.metrics["images"] == again.images
    assert done.metrics["suspects"] == len(again.suspects) and again.dataset_id == ds.id
    assert not {s["file"] for s in again.suspects} & set(wanted)
    # A search of a run that is not there is refused in words, before anything is queued.
    with pytest.raises(UserError, match=r"^There is no run '20200101-000000-gone-0000' on this server\.$"):
        registry.submit_task(kinds.LABEL_ISSUES, {"run": "20200101-000000-gone-0000"})


# ---------------------------------------------------------------------------------------------- the command line


def test_cli_label_issues_prints_the_suspects(searched, capsys):
    from core.cli.main import main

    base, run = searched["base"], searched["run"]
    proc = run_cli("label-issues", run.name, "--folds", 4, env_dir=base)  # a run's id works as well as its folder
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("120 training and validation images of noisy.zip, 4-fold")
    assert "suspected label errors, most suspicious first" in lines[1]
    assert lines[2].split() == ["file", "given", "suggested", "confidence", "given's"]
    shown = {line.split()[0] for line in lines[3:-1]}
    assert len(shown & searched["flipped"]) >= 0.8 * len(searched["flipped"])
    assert lines[-1].startswith("saved to ") and lines[-1].endswith(label_issues.FILE)

    capsys.readouterr()
    assert main(["label-issues", str(run), "--json"]) == 0  # in this process: TensorFlow is loaded once
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == 1 and data["folds"] == 5 and data["images"] == 120
    assert {s["file"] for s in data["suspects"]} == {s["file"] for s in searched["found"].suspects}
    assert set(data["suspects"][0]) == {"file", "given", "suggested", "confidence", "given_probability"}


def test_cli_label_issues_of_an_unknown_run_is_one_line(tmp_path):
    assert_user_error(run_cli("label-issues", tmp_path / "nope", env_dir=tmp_path), "is not a folder")
    assert_user_error(run_cli("label-issues", "20200101-000000-nope-0000", env_dir=tmp_path), "is not a folder")


def test_a_run_whose_images_are_gone_says_so(searched, tmp_path):
    import shutil

    from core.workspace.runs import read_json, write_json

    run = tmp_path / "copy"
    shutil.copytree(searched["run"], run)
    write_json(run / "run.json", {**read_json(run / "run.json"), "dataset_id": ""})
    write_json(run / "split.json", {**read_json(run / "split.json"), "root": str(tmp_path / "gone")})
    with pytest.raises(UserError, match="no longer on disk"):
        find_label_issues(run)
    assert os.environ["CLASSIFIER_WORK_DIR"] != str(searched["base"] / "work")  # the module's dataset was not used
