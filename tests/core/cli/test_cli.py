"""The command line end to end, in a subprocess: ``python -m core inspect | train | predict``.

Training is VGG16 with random weights at 32 px; the run is trained once for the module.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from conftest import COLORS, ROOT, assert_user_error, class_entries, jpeg_bytes, make_zip, run_cli

from core.config import TrainConfig

# What TensorFlow's C++ runtime prints when it is not silenced (absl log lines, CUDA probes, CPU notes).
TF_NOISE = re.compile(r"^[IWEF]\d{4} |absl|cuda|cpu_feature_guard|oneDNN|TF_ENABLE|tensorflow", re.I | re.M)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def data_zip(base) -> Path:
    entries = class_entries(per_class=8)
    entries["blue/notes.txt"] = b"not an image"
    return make_zip(base / "colours.zip", entries)


@pytest.fixture(scope="module")
def trained(base, data_zip):
    """One CLI training into the default runs folder: (run folder, the process)."""
    proc = run_cli(
        "train", data_zip,
        "--weights", "none", "--image-size", 32, "--epochs", 2, "--batch-size", 4,
        "--head", "gap", "--unfreeze", 3, "--optimizer", "adam", "--learning-rate", 0.05, "--decay", 0,
        "--precision", "float32", "--work-dir", base / "work",
        env_dir=base,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = list((base / "runs").iterdir())
    assert len(found) == 1
    return found[0], proc


@pytest.fixture(scope="module")
def images(base) -> dict[str, Path]:
    folder = base / "images"
    folder.mkdir()
    paths = {}
    for i, cls in enumerate(("red", "blue", "red")):
        paths[f"{cls}{i}"] = folder / f"{cls}{i}.jpg"
        paths[f"{cls}{i}"].write_bytes(jpeg_bytes(COLORS[cls], (48, 36), seed=700 + i))
    paths["bad"] = folder / "bad.jpg"
    paths["bad"].write_text("a text file with a .jpg name")
    return paths


# ---------------------------------------------------------------------------------------------- inspect


def test_inspect_prints_classes_and_counts(data_zip, base):
    proc = run_cli("inspect", data_zip, env_dir=base)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "colours.zip: 2 classes, 16 images (classes layout)" in out
    assert re.search(r"^\s+blue\s+all\s+8$", out, re.M) and re.search(r"^\s+red\s+all\s+8$", out, re.M)
    assert "blue/notes.txt" in out  # the skipped file is named with its reason
    assert not TF_NOISE.search(proc.stderr)


def test_inspect_json_is_valid(data_zip, base):
    proc = run_cli("inspect", data_zip, "--json", env_dir=base)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["classes"] == ["blue", "red"]
    assert report["counts"] == {"blue": {"all": 8}, "red": {"all": 8}}
    assert report["total"] == 16 and report["layout"] == "classes"
    assert [s["file"] for s in report["skipped"]] == ["blue/notes.txt"]


# ---------------------------------------------------------------------------------------------- train


def test_train_saves_a_complete_run(trained, base):
    run, proc = trained
    assert run.parent == base / "runs" and "colours" in run.name
    assert re.search(r"^completed: 2 epochs, val_accuracy \d\.\d{3}, val_loss [\d.]+, \d+ s; saved to ", proc.stdout)
    assert proc.stdout.strip().endswith(str(run))
    assert "Not calibrated: only 2 validation images; calibration needs at least 10." in proc.stderr
    marker = json.loads((run / "run.json").read_text())
    assert marker["status"] == "completed" and marker["epochs_completed"] == 2
    config = json.loads((run / "config.json").read_text())
    assert (config["weights"], config["image_size"], config["head"], config["learning_rate"]) == (
        "none",
        32,
        "gap",
        0.05,
    )
    assert config["nesterov"] is True and config["batch_size"] == 4
    assert json.loads((run / "classes.json").read_text()) == ["blue", "red"]
    assert (run / "model.keras").is_file()


def test_train_reports_progress_on_stderr_without_tensorflow_noise(trained):
    _, proc = trained
    assert "Traceback" not in proc.stderr
    assert "colours.zip: 2 classes, 16 images" in proc.stderr
    assert "epoch 1/2:" in proc.stderr and "epoch 2/2:" in proc.stderr
    assert not TF_NOISE.search(proc.stderr), proc.stderr


# ---------------------------------------------------------------------------------------------- predict


def test_predict_prints_ranked_classes(trained, images, base):
    run, _ = trained
    proc = run_cli("predict", run, images["red0"], images["blue1"], images["bad"], "--top-k", 2, env_dir=base)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().split("\n")
    assert [line.split(":")[0] for line in lines] == [str(images["red0"]), str(images["blue1"])]
    for line in lines:
        ranked = re.findall(r"(blue|red) ([\d.]+)%", line)
        assert sorted(c for c, _ in ranked) == ["blue", "red"]
        probs = [float(p) for _, p in ranked]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(100, abs=0.2)
    err = proc.stderr.strip().split("\n")
    assert len(err) == 1 and err[0].startswith(f"{images['bad']}: skipped: ")
    assert not TF_NOISE.search(proc.stderr), proc.stderr


def test_predict_json_is_valid(trained, images, base):
    run, _ = trained
    proc = run_cli("predict", run, images["blue1"], images["red2"], images["bad"], "--json", env_dir=base)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == [str(images["blue1"]), str(images["red2"]), str(images["bad"])]
    for r in results[:2]:
        probs = [p["probability"] for p in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == 2 and "error" not in r
    assert results[2]["predictions"] == [] and results[2]["error"]
    assert proc.stderr == ""
    # The same numbers as the library gives in this process.
    from core.model.predict import load_run, predict

    expected = predict(load_run(run), [str(images["blue1"]), str(images["red2"])], top_k=3)
    for r, p in zip(results, expected, strict=False):
        assert [d["class"] for d in r["predictions"]] == [c for c, _ in p.top]
        assert [d["probability"] for d in r["predictions"]] == pytest.approx([pr for _, pr in p.top], abs=1e-5)


def test_predict_with_only_missing_images_is_a_user_error(trained, base):
    run, _ = trained
    assert_user_error(run_cli("predict", run, base / "nope.jpg", env_dir=base), "No such image file")


# ---------------------------------------------------------------------------------------------- user errors


def test_zip_with_path_traversal_is_refused_and_nothing_is_written(tmp_path):
    entries = class_entries(per_class=3)
    entries["../evil.txt"] = b"escaped"
    entries["red/../../evil2.txt"] = b"escaped too"
    (tmp_path / "data").mkdir()
    bad = make_zip(tmp_path / "data" / "evil.zip", entries)
    work = tmp_path / "data" / "work"
    for command in ("inspect", "train"):
        proc = run_cli(command, bad, "--work-dir", work, "--weights", "none", "--image-size", 32, env_dir=tmp_path)
        if command == "inspect":  # inspect has no training flags: argparse refuses them in one line too
            assert_user_error(proc, "unrecognized arguments")
            proc = run_cli(command, bad, "--work-dir", work, env_dir=tmp_path)
        assert_user_error(proc, "outside its folder")
    assert [p.name for p in tmp_path.rglob("evil*")] == ["evil.zip"]
    assert not (ROOT / "evil.txt").exists() and not (ROOT.parent / "evil.txt").exists()
    assert not work.exists() or list(work.iterdir()) == []
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "{notzip}", "--weights", "none"], "not a zip file"),
        (["inspect", "{notzip}"], "not a zip file"),
        (["inspect", "{missing}"], "does not exist"),
        (["predict", "{plain}", "{image}"], "not a run saved by this app"),
        (["train", "{zip}", "--image-size", "8"], "--image-size must be between 32 and 512"),
        (["train", "{zip}", "--head", "vgg-fc", "--image-size", "64"], "224"),
        (["train", "{zip}", "--head", "resnet"], "invalid choice"),
        (["train", "{zip}", "--epochs", "many"], "invalid int value"),
        (["train", "{zip}", "--validation-split", "0"], "--validation-split"),
        (["bake", "{zip}"], "invalid choice"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, args, needle):
    notzip = tmp_path / "photos.zip"
    notzip.write_text("this is not a zip")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.keras").write_bytes(b"PK")
    image = tmp_path / "x.jpg"
    image.write_bytes(jpeg_bytes())
    values = {
        "notzip": notzip,
        "missing": tmp_path / "missing.zip",
        "plain": plain,
        "image": image,
        "zip": make_zip(tmp_path / "ok.zip", class_entries(per_class=2)),
    }
    proc = run_cli(*[a.format(**values) for a in args], env_dir=tmp_path)
    assert_user_error(proc, needle)
    assert not (tmp_path / "runs").exists()


def test_weights_file_of_another_model_is_one_line_too(tmp_path):
    from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

    # isort: split
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save_weights(tmp_path / "other.weights.h5")
    data = make_zip(tmp_path / "ok.zip", class_entries(per_class=3))
    proc = run_cli(
        "train", data, "--weights", tmp_path / "other.weights.h5", "--image-size", 32, "--out", tmp_path / "run",
        env_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # What is left once progress bars and the dataset summary are set aside: the error, and no per-layer
    # loading warnings from Keras.
    shown = [line.split("\r")[-1].strip() for line in proc.stderr.split("\n")]
    shown = [line for line in shown if line and not line.startswith(("ok.zip: ", "warning: Class", "reading "))]
    assert shown == ["error: other.weights.h5 does not hold VGG16 weights (its layers do not match VGG16)."]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- help


def test_train_help_lists_every_option_with_its_default(tmp_path):
    proc = run_cli("train", "--help", env_dir=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    text = proc.stdout
    starts = {m.group(1): m.start() for m in re.finditer(r"^  (--[a-z-]+)", text, re.M)}
    ends = [*sorted(starts.values()), len(text)]
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in starts, flag
        start = starts[flag]
        block = " ".join(text[start : next(e for e in ends if e > start)].split())
        default = "none" if f.default == () else f.default  # a list flag (--exclude) starts empty
        if f.name == "learning_rate":  # per optimizer, as on the Train page; SGD's is the field's own
            default = (
                "0.01 for sgd, 0.001 for rmsprop, 0.01 for adagrad, 1 for adadelta, 0.001 for adam, 0.001 for adamw"
            )
        assert f"(default: {default})" in block, (flag, block)
        if f.metadata["choices"]:
            assert "{" + ",".join(f.metadata["choices"]) + "}" in block
    assert "--no-nesterov" in text


def test_inspect_and_predict_help(tmp_path):
    inspect = run_cli("inspect", "--help", env_dir=tmp_path)
    assert inspect.returncode == 0
    assert "--json" in inspect.stdout and "--max-entries" in inspect.stdout and "(default: 200000)" in inspect.stdout
    predict = run_cli("predict", "--help", env_dir=tmp_path)
    assert predict.returncode == 0
    assert "--top-k" in predict.stdout and "(default: 3)" in predict.stdout
    top = run_cli("--help", env_dir=tmp_path)
    assert top.returncode == 0 and all(c in top.stdout for c in ("inspect", "train", "predict"))


def test_cache_command_shows_and_clears_the_feature_cache(trained, base):
    shown = run_cli("cache", env_dir=base)
    assert shown.returncode == 0, shown.stderr
    entries = int(shown.stdout.split(":")[-1].split()[0])
    assert entries > 0  # the training above cached its frozen-layer features
    cleared = run_cli("cache", "--clear", env_dir=base)
    assert cleared.returncode == 0 and "cleared" in cleared.stdout
    assert " 0 entries" in run_cli("cache", env_dir=base).stdout


# ---------------------------------------------------------------------------------------------- saved datasets


def save_in(env_dir: Path, zip_path: Path, **kwargs):
    """Save a zip in the workspace that ``run_cli(..., env_dir=env_dir)`` uses."""
    from core.workspace import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLASSIFIER_WORK_DIR", str(env_dir / "work"))
        return datasets.save_zip(zip_path, **kwargs)


def test_datasets_lists_a_zip_saved_twice_once(tmp_path):
    data = make_zip(tmp_path / "colours.zip", class_entries(per_class=4))
    copy = tmp_path / "copy" / "again.zip"
    copy.parent.mkdir()
    copy.write_bytes(data.read_bytes())
    first = save_in(tmp_path, data, owner="a@x.org")
    assert save_in(tmp_path, copy).id == first.id

    proc = run_cli("datasets", env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header, *lines = proc.stdout.strip().split("\n")
    assert header.split() == ["id", "name", "classes", "images", "size", "added", "by", "last", "used"]
    assert len(lines) == 1
    assert re.match(
        rf"^{first.id}  colours\.zip\s+2\s+8\s+[\d.]+ KB\s+\d{{4}}-\d\d-\d\d \d\d:\d\d\s+a@x\.org\s", lines[0]
    )

    listed = json.loads(run_cli("datasets", "--json", env_dir=tmp_path).stdout)
    assert [(d["id"], d["name"], d["classes"], d["images"], d["added_by"]) for d in listed] == [
        (first.id, "colours.zip", 2, 8, "a@x.org")
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", listed[0]["last_used"])


def test_datasets_with_none_saved(tmp_path):
    proc = run_cli("datasets", env_dir=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("no saved datasets in ")
    assert json.loads(run_cli("datasets", "--json", env_dir=tmp_path).stdout) == []


def test_inspect_takes_a_saved_dataset_id(data_zip, tmp_path):
    saved = save_in(tmp_path, data_zip)
    proc = run_cli("inspect", saved.id, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "colours.zip: 2 classes, 16 images (classes layout)" in proc.stdout
    assert "blue/notes.txt" in proc.stdout


@pytest.mark.parametrize("command", ["inspect", "train", "lr-find", "evaluate"])
def test_an_unknown_saved_dataset_id_is_one_line(tmp_path, command, trained):
    args = [trained[0], "0123456789abcdef"] if command == "evaluate" else ["0123456789abcdef"]
    proc = run_cli(command, *args, env_dir=tmp_path)
    assert_user_error(proc, "There is no saved dataset 0123456789abcdef on this server")


def test_train_on_a_saved_dataset_and_evaluate_on_it_without_the_zip(data_zip, tmp_path):
    saved = save_in(tmp_path, data_zip)
    run = tmp_path / "out" / "saved-run"
    proc = run_cli(
        "train", saved.id, "--out", run,
        "--weights", "none", "--image-size", 32, "--epochs", 1, "--batch-size", 4, "--head", "gap",
        "--unfreeze", 3, "--optimizer", "adam", "--precision", "float32",
        env_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "run.json").read_text())["dataset_id"] == saved.id
    # The saved split's folder is gone (say the workspace moved): the saved dataset is found by its id.
    split = json.loads((run / "split.json").read_text())
    (run / "split.json").write_text(json.dumps({**split, "root": str(tmp_path / "moved-away")}))
    ev = run_cli("evaluate", run, "--json", env_dir=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert f"evaluating on the saved dataset colours.zip ({saved.id})" in ev.stderr
    result = json.loads(ev.stdout)
    assert (result["data"], result["images"]) == ("colours.zip", 2)  # 10 % of each class, as in training
    assert sorted(result["files"]) == sorted(split["val"])  # the same images training held out


def test_jobs_shows_what_the_browsers_queued_and_ran(tmp_path):
    from core.config import TrainConfig
    from core.jobs.registry import JobRegistry
    from core.workspace import db
    from core.workspace.datasets import open_dataset

    saved = save_in(tmp_path, make_zip(tmp_path / "colours.zip", class_entries(per_class=4)), owner="a@x.org")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLASSIFIER_WORK_DIR", str(tmp_path / "work"))
        reg = JobRegistry(dispatch=False)  # records only: nothing starts in this process
        queued = reg.submit(open_dataset(saved.id), TrainConfig(weights="none", epochs=3), owner="a@x.org")
        done = reg.submit(open_dataset(saved.id), TrainConfig(weights="none"), name="older")
        with db.connect(write=True) as con:
            con.execute("UPDATE jobs SET state = 'completed', finished = created + 60, "
                        "metrics = '{\"val_accuracy\": 0.875}' WHERE id = ?", (done.id,))  # fmt: skip

    proc = run_cli("jobs", env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header, *lines = proc.stdout.strip().split("\n")
    assert header.split() == ["id", "kind", "state", "by", "dataset", "progress", "created"]
    assert [line.split()[:5] for line in lines] == [
        [done.id, "training", "completed", "guest", "colours.zip"],
        [queued.id, "training", "queued", "a@x.org", "colours.zip"],
    ]
    assert "val acc 87.5%" in lines[0]
    listed = json.loads(run_cli("jobs", "--json", env_dir=tmp_path).stdout)
    assert [(j["id"], j["state"], j["owner"], j["dataset_id"]) for j in listed] == [
        (done.id, "completed", "", saved.id),
        (queued.id, "queued", "a@x.org", saved.id),
    ]
    assert run_cli("jobs", env_dir=tmp_path / "empty").stdout.startswith("no jobs in the last day")


def test_a_damaged_workspace_database_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "workspace.db").write_bytes(b"not a database at all" * 200)
    proc = run_cli("jobs", env_dir=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "workspace.db is damaged" in proc.stderr


def test_cli_share_prints_a_new_expiring_link_once_and_unshare_withdraws_it(trained_run, tmp_path, monkeypatch):
    import shutil

    from core.workspace import share

    monkeypatch.setenv("CLASSIFIER_RUNS_DIR", str(tmp_path / "runs"))
    run = shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    done = run_cli("share", run.name, "--expires", "7", env_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    address = done.stdout.strip()
    assert address.startswith(f"?demo={run.name}&key=")
    assert "stops working in 7 days" in done.stderr
    key = address.split("&key=", 1)[1]
    assert key not in (run / share.SHARE_FILE).read_text()  # only its hash is kept
    assert share.open_shared(run.name, key).path == run and share.sharing(run).expires
    assert run_cli("unshare", run.name, env_dir=tmp_path).returncode == 0
    assert not (run / share.SHARE_FILE).exists()
    assert_user_error(run_cli("share", "20990101-000000-nope-ffff", env_dir=tmp_path), "There is no run")
    assert_user_error(run_cli("share", run.name, "--expires", "0", env_dir=tmp_path), "expires after 1 to")
