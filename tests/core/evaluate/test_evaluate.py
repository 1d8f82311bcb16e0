"""Evaluation: the metrics against hand-computed ones, and ``evaluate_run`` / the CLI on a real trained run.

One run is trained for the module on a zip with its own train/val/test split: red vs blue images, VGG16 with
random weights at 32 px, gap head, 2 epochs.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COLORS, ROOT, class_entries, jpeg_bytes, make_zip, run_cli, tiny_config

from core.data.dataset import load_dataset, split_dataset
from core.evaluate.evaluation import FILE, Evaluation, compute_metrics, evaluate_run, load_evaluation
from core.model.predict import load_run, predict
from core.train.training import train
from core.util.errors import UserError
from core.workspace import runs

# ---------------------------------------------------------------------------------------------- the metrics

# Known predictions: 8 images of a, b, c; class c is never predicted and class d has no images.
CLASSES = ["a", "b", "c", "d"]
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
PROBS = [
    [0.7, 0.2, 0.1, 0.0],  # a -> a
    [0.6, 0.3, 0.1, 0.0],  # a -> a
    [0.3, 0.6, 0.1, 0.0],  # a -> b  0.6
    [0.1, 0.8, 0.1, 0.0],  # b -> b
    [0.5, 0.4, 0.1, 0.0],  # b -> a  0.5
    [0.9, 0.07, 0.03, 0.0],  # c -> a  0.9, and c is not even in the top 2
    [0.7, 0.1, 0.2, 0.0],  # c -> a  0.7
    [0.2, 0.5, 0.3, 0.0],  # c -> b  0.5, ties with image 4: file order decides
]
FILES = [f"f{i}.jpg" for i in range(8)]


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    ev = compute_metrics(Y_TRUE, PROBS, CLASSES, FILES, top_k=2)
    assert ev.confusion == [[2, 1, 0, 0], [1, 1, 0, 0], [2, 1, 0, 0], [0, 0, 0, 0]]
    assert np.allclose(
        ev.confusion_normalized, [[2 / 3, 1 / 3, 0, 0], [1 / 2, 1 / 2, 0, 0], [2 / 3, 1 / 3, 0, 0], [0, 0, 0, 0]]
    )
    assert ev.images == 8 and ev.accuracy == pytest.approx(3 / 8)
    assert ev.top_k == 2 and ev.top_k_accuracy == pytest.approx(7 / 8)
    true_p = [0.7, 0.6, 0.3, 0.8, 0.4, 0.03, 0.2, 0.3]
    assert ev.loss == pytest.approx(-sum(math.log(p) for p in true_p) / 8)


def test_per_class_precision_recall_f1_with_zero_over_zero_as_zero():
    ev = compute_metrics(Y_TRUE, PROBS, CLASSES, FILES)
    got = {r["class"]: (r["precision"], r["recall"], r["f1"], r["support"]) for r in ev.per_class}
    assert [r["class"] for r in ev.per_class] == CLASSES
    assert got["a"] == pytest.approx((2 / 5, 2 / 3, 0.5, 3))
    assert got["b"] == pytest.approx((1 / 3, 1 / 2, 0.4, 2))
    assert got["c"] == (0.0, 0.0, 0.0, 3)  # never predicted: precision 0/0
    assert got["d"] == (0.0, 0.0, 0.0, 0)  # no images: recall 0/0


def test_most_confused_pairs_are_off_diagonal_and_most_first():
    ev = compute_metrics(Y_TRUE, PROBS, CLASSES, FILES)
    assert [(m["true"], m["predicted"], m["count"]) for m in ev.most_confused] == [
        ("c", "a", 2),
        ("a", "b", 1),
        ("b", "a", 1),
        ("c", "b", 1),
    ]


def test_misclassified_images_come_worst_first():
    ev = compute_metrics(Y_TRUE, PROBS, CLASSES, FILES)
    assert [(m["file"], m["true"], m["predicted"]) for m in ev.misclassified] == [
        ("f5.jpg", "c", "a"),
        ("f6.jpg", "c", "a"),
        ("f2.jpg", "a", "b"),
        ("f4.jpg", "b", "a"),
        ("f7.jpg", "c", "b"),
    ]
    assert [m["probability"] for m in ev.misclassified] == pytest.approx([0.9, 0.7, 0.6, 0.5, 0.5])
    assert [m["true_probability"] for m in ev.misclassified] == pytest.approx([0.03, 0.2, 0.3, 0.4, 0.3])


def test_top_k_is_capped_at_the_number_of_classes_and_bad_input_is_refused():
    ev = compute_metrics([0, 1], [[0.4, 0.6], [0.3, 0.7]], ["x", "y"], top_k=5)
    assert ev.top_k == 2 and ev.top_k_accuracy == 1.0 and ev.accuracy == 0.5
    assert ev.misclassified[0]["file"] == "image 1"
    with pytest.raises(ValueError, match="shape"):
        compute_metrics([0, 1], [[0.4, 0.6]], ["x", "y"])
    with pytest.raises(ValueError, match="class indices"):
        compute_metrics([0, 2], [[0.4, 0.6], [0.3, 0.7]], ["x", "y"])


def test_evaluation_round_trips_through_its_dict():
    ev = compute_metrics(Y_TRUE, PROBS, CLASSES, FILES)
    ev.source, ev.split, ev.data, ev.warnings = "val", "val", "x.zip", ["w"]
    assert Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev


# ---------------------------------------------------------------------------------------------- a trained run


def split_entries(train=6, val=2, test=3) -> dict[str, bytes]:
    entries = {}
    for k, cls in enumerate(("blue", "red")):
        for split, n in (("train", train), ("val", val), ("test", test)):
            for i in range(n):
                seed = 1000 * k + 100 * len(split) + i
                entries[f"colours/{split}/{cls}/{split}_{i}.jpg"] = jpeg_bytes(COLORS[cls], (36, 28), seed=seed)
    return entries


TEST_FILES = sorted(f"colours/test/{c}/test_{i}.jpg" for c in ("blue", "red") for i in range(3))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def data_zip(base) -> Path:
    return make_zip(base / "colours.zip", split_entries())


@pytest.fixture(scope="module")
def run_dir(base, data_zip) -> Path:
    ds = load_dataset(data_zip, base / "work")
    config = tiny_config()
    result = train(ds, config, base / "run")
    assert result.status == "completed"
    shutil.rmtree(ds.root)  # as after a real session: the extracted dataset is gone, only the run remains
    return result.run_dir


@pytest.fixture
def dataset(data_zip, tmp_path):
    return load_dataset(data_zip, tmp_path / "work")


def expected_from_predict(run_dir, ds, files) -> Evaluation:
    """The metrics computed here from ``core.model.predict``'s own probabilities for the same files."""
    run = load_run(run_dir)
    found = predict(run, [str(ds.root / f) for f in files], top_k=len(run.classes))
    probs = [[dict(p.top)[c] for c in run.classes] for p in found]
    y_true = [run.classes.index(Path(f).parent.name) for f in files]
    return compute_metrics(y_true, probs, run.classes, files)


def scores(ev: Evaluation) -> dict:
    d = ev.to_dict()
    keys = ("images", "accuracy", "loss", "top_k_accuracy", "confusion", "per_class", "most_confused", "misclassified")
    return {k: d[k] for k in keys}


def test_given_data_is_scored_on_its_test_split_which_never_touched_training(run_dir, dataset):
    ev = evaluate_run(run_dir, dataset, top_k=3)
    assert (ev.source, ev.split, ev.data) == ("given data", "test", "colours.zip")
    assert sorted(ev.files) == TEST_FILES
    split = runs.read_json(run_dir / "split.json")
    assert not set(TEST_FILES) & set(split["train"] + split["val"])
    assert sorted(split["test"]) == TEST_FILES
    assert ev.classes == ["blue", "red"] and ev.top_k == 2 and ev.top_k_accuracy == 1.0
    assert [r["support"] for r in ev.per_class] == [3, 3]
    assert sum(map(sum, ev.confusion)) == 6 and ev.warnings == []
    # the same probabilities as core.model.predict gives for these files, hence the same scores
    assert scores(ev) == scores(expected_from_predict(run_dir, dataset, ev.files))


def test_a_zip_path_gives_the_same_scores_and_leaves_no_extracted_folder(run_dir, data_zip, dataset):
    from core.workspace.folders import work_root

    from_zip = evaluate_run(run_dir, data_zip)
    assert sorted(from_zip.files) == TEST_FILES
    assert scores(from_zip) == scores(evaluate_run(run_dir, dataset))
    assert list(work_root().iterdir()) == []


def test_evaluation_json_is_written_once_and_read_back(run_dir, dataset):
    ev = evaluate_run(run_dir, dataset)
    saved = json.loads((run_dir / FILE).read_text())
    assert saved["source"] == "given data" and saved["split"] == "test" and sorted(saved["files"]) == TEST_FILES
    assert load_evaluation(run_dir) == ev
    assert not list(run_dir.glob("*.tmp"))


def test_load_evaluation_without_one_is_none(tmp_path):
    fake = tmp_path / "fake-run"
    fake.mkdir()
    runs.write_json(fake / runs.MARKER, {"format": runs.RUN_FORMAT})
    for name in ("model.keras", "classes.json", "config.json"):
        (fake / name).write_text("{}")
    assert load_evaluation(fake) is None
    runs.write_json(fake / FILE, {"format": 0, "accuracy": 1.0})  # an older format is recomputed, not misread
    assert load_evaluation(fake) is None
    with pytest.raises(UserError, match="not a run"):
        load_evaluation(tmp_path)


def test_data_without_a_test_split_uses_its_validation_images_and_skips_unknown_classes(run_dir, tmp_path):
    folder = tmp_path / "more"
    for name, data in class_entries(classes=("red", "blue", "green"), per_class=5).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    ev = evaluate_run(run_dir, folder)
    assert (ev.source, ev.split) == ("given data", "val")
    ds = load_dataset(folder)
    _, val_idx = split_dataset(ds, load_run(run_dir).config)
    val = sorted(ds.items[i].path for i in val_idx)
    assert sorted(ev.files) == [p for p in val if not p.startswith("green/")]
    assert ev.images == 2 and [r["support"] for r in ev.per_class] == [1, 1]
    assert ev.warnings == ["1 image of 1 class the model was not trained on (green) was skipped."]


def test_without_data_the_saved_split_is_used_while_its_folder_exists(run_dir, dataset):
    with pytest.raises(UserError, match=r"pass the dataset again: python -m core evaluate .* DATA"):
        evaluate_run(run_dir)  # split.json does not say where the dataset was, and it was deleted anyway
    split_file = run_dir / "split.json"
    original = split_file.read_text()
    try:
        runs.write_json(split_file, {**json.loads(original), "root": str(dataset.root)})
        ev = evaluate_run(run_dir)
        assert (ev.source, ev.split, ev.data) == ("test", "test", "colours.zip")
        assert sorted(ev.files) == TEST_FILES
        assert scores(ev) == scores(evaluate_run(run_dir, dataset))
        shutil.rmtree(dataset.root)
        with pytest.raises(UserError, match="no longer on disk"):
            evaluate_run(run_dir)
    finally:
        split_file.write_text(original)


def test_top_k_below_one_is_a_user_error(run_dir, dataset):
    with pytest.raises(UserError, match="Top-k must be at least 1"):
        evaluate_run(run_dir, dataset, top_k=0)


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_evaluate_prints_the_scores(run_dir, data_zip, tmp_path):
    proc = run_cli("evaluate", run_dir, data_zip, "--top-k", 1, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    saved = load_evaluation(run_dir)
    out = proc.stdout
    assert out.startswith("6 test images of colours.zip\n")
    assert f"accuracy {saved.accuracy:.3f}, loss {saved.loss:.4f}, top-1 accuracy {saved.accuracy:.3f}" in out
    for r in saved.per_class:
        assert f"  {r['class']:4s}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}        3\n" in out
    assert out.strip().endswith(f"saved to {run_dir / FILE}")
    assert "Traceback" not in proc.stderr


def test_cli_evaluate_of_a_folder_that_is_not_a_run_exits_2_with_one_line(tmp_path):
    proc = run_cli("evaluate", tmp_path, env_dir=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not a run saved by this app" in lines[0]


def test_reading_a_saved_evaluation_does_not_load_tensorflow():
    code = "import sys, core.evaluate.evaluation; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr  # pages must not import TensorFlow
