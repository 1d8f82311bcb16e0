"""The command line and dataset versions, in a subprocess: ``datasets add | versions | diff``, ``DATASET@VERSION``
wherever a dataset is taken, and ``retrain RUN --newest``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import COLORS, assert_user_error, class_entries, jpeg_bytes, make_zip, run_cli

TINY = ("--weights", "none", "--image-size", 32, "--epochs", 1, "--batch-size", 4, "--head", "gap", "--unfreeze", 3,
        "--optimizer", "adam", "--precision", "float32")  # fmt: skip


def commit_in(env_dir: Path, dataset_id: str, **change):
    """A new version in the workspace that ``run_cli(..., env_dir=env_dir)`` uses (as the review queue would)."""
    from core.workspace import versions

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLASSIFIER_WORK_DIR", str(env_dir / "work"))
        return versions.commit(dataset_id, "", "three greens, one relabelled", **change)


@pytest.fixture
def added(tmp_path) -> str:
    """A zip saved with ``datasets add``, then given a version 2; its id."""
    data = make_zip(tmp_path / "colours.zip", class_entries(per_class=8))
    proc = run_cli("datasets", "add", data, "--name", "Colours", env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dataset_id = proc.stdout.strip()
    assert len(dataset_id) == 16 and "Colours: 2 classes, 16 images, version 1" in proc.stderr
    from core.workspace import versions

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLASSIFIER_WORK_DIR", str(tmp_path / "work"))
        blue = next(e for e in versions.get(dataset_id, 1).entries if e.label == "blue")
    greens = [(jpeg_bytes(COLORS["green"], seed=900 + i), f"g{i}.jpg", "green") for i in range(3)]
    commit_in(tmp_path, dataset_id, add=greens, relabel={blue.hash: "red"})
    return dataset_id


def test_datasets_add_prints_the_id_and_the_same_zip_again_is_the_same_dataset(tmp_path, added):
    listed = json.loads(run_cli("datasets", "--json", env_dir=tmp_path).stdout)
    assert [(d["id"], d["name"], d["images"], d["classes"]) for d in listed] == [(added, "Colours", 19, 3)]
    again = run_cli("datasets", "add", tmp_path / "colours.zip", env_dir=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == added


def test_datasets_versions_lists_them_with_their_new_validation_images(tmp_path, added):
    proc = run_cli("datasets", "versions", added, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header, v1, v2 = proc.stdout.strip().split("\n")
    assert header.split()[:5] == ["version", "created", "by", "images", "classes"]
    assert v1.split()[0] == "1" and v1.endswith("Saved from colours.zip") and " 16 " in v1
    assert v2.split()[0] == "2" and v2.endswith("three greens, one relabelled") and " 19 " in v2
    assert "since v1" in v2
    rows = json.loads(run_cli("datasets", "versions", added, "--json", env_dir=tmp_path).stdout)
    assert [(r["number"], r["parent"], r["images"]) for r in rows] == [(1, None, 16), (2, 1, 19)]
    assert rows[1]["counts"] == {"blue": 7, "green": 3, "red": 9} and isinstance(rows[1]["new_validation"], int)


def test_datasets_diff_says_what_changed_per_class(tmp_path, added):
    proc = run_cli("datasets", "diff", added, 1, 2, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().split("\n")
    assert lines[0] == "v1 → v2: 3 added (green 3), 1 relabelled (blue → red 1)"
    assert lines[1].split() == ["class", "added", "removed", "relabelled", "in", "relabelled", "out"]
    assert [ln.split() for ln in lines[2:]] == [["blue", "0", "0", "0", "1"], ["green", "3", "0", "0", "0"],
                                               ["red", "0", "0", "1", "0"]]  # fmt: skip
    as_json = json.loads(run_cli("datasets", "diff", added, "1", "latest", "--json", env_dir=tmp_path).stdout)
    assert as_json["b"] == 2 and as_json["per_class"]["green"]["added"] == 3


def test_inspect_takes_a_version(tmp_path, added):
    first = run_cli("inspect", f"{added}@1", env_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "colours.zip: 2 classes, 16 images (classes layout)" in first.stdout
    newest = run_cli("inspect", f"{added}@latest", env_dir=tmp_path)
    assert "colours.zip: 3 classes, 19 images (classes layout)" in newest.stdout
    assert run_cli("inspect", added, env_dir=tmp_path).stdout == newest.stdout  # a bare id: the newest


@pytest.mark.parametrize(
    "args, needle",
    [
        (("inspect", "{id}@9"), "has no version 9; it has versions 1 to 2."),
        (("inspect", "{id}@x"), "'x' is not a version: write @latest or a version number"),
        (("train", "{id}@9"), "has no version 9"),
        (("datasets", "versions", "0123456789abcdef"), "There is no saved dataset 0123456789abcdef"),
        (("datasets", "diff", "{id}", "1", "7"), "has no version 7"),
        (("datasets", "versions", "../../etc"), "There is no saved dataset ../../etc"),
        (("datasets", "add", "missing.zip"), "missing.zip does not exist"),
        (("inspect", "{zip}@2"), "which has no versions: save it with"),
        (("retrain", "nope"), "There is no run 'nope'"),
    ],
)
def test_unknown_versions_and_datasets_are_one_line_and_exit_2(tmp_path, added, args, needle):
    args = [a.format(id=added, zip=tmp_path / "colours.zip") for a in args]
    assert_user_error(run_cli(*args, env_dir=tmp_path), needle)


def test_train_on_version_1_then_retrain_on_the_newest(tmp_path, added):
    out = tmp_path / "out" / "first"
    proc = run_cli("train", f"{added}@1", "--out", out, *TINY, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "colours.zip, version 1: 2 classes, 16 images" in proc.stderr
    assert json.loads((out / "config.json").read_text())["dataset_version"] == 1
    assert json.loads((out / "run.json").read_text())["dataset_version"] == 1

    again = tmp_path / "out" / "again"
    proc = run_cli("retrain", out, "--newest", "--out", again, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "colours.zip, version 2: 3 classes, 19 images" in proc.stderr
    config = json.loads((again / "config.json").read_text())
    assert config["dataset_version"] == 2 and config["epochs"] == 1 and config["image_size"] == 32
    assert json.loads((again / "classes.json").read_text()) == ["blue", "red", "green"]
