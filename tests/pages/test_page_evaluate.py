"""The Evaluate page and Grad-CAM on the Classify page, through AppTest.

One real run is trained for the module (VGG16 from random weights, 32 px, one epoch, red/green/blue images); its
dataset folder stays on disk, as it does while the session that trained it lives. Tests that need known scores
write an evaluation.json made by ``core.evaluate.evaluation.compute_metrics`` from chosen probabilities over the
dataset's real files; the page reads it like any other.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import COLORS, class_entries, jpeg_bytes, make_zip, tiny_config
from pagetest import assert_clean, button, metrics, open_app, texts
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

CLASSES = ["blue", "green", "red"]  # the dataset's classes, in the run's output order
FILE = "evaluation.json"  # what the page reads; core is imported inside the tests, as in test_pages
TRUST_CHARTS = ('"confidence"', '"images answered"')  # the reliability diagram and the coverage curve


@pytest.fixture(autouse=True)
def work_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "work"
    monkeypatch.setenv("CLASSIFIER_WORK_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One real run; its split.json points at a dataset folder that lives as long as the module."""
    base = tmp_path_factory.mktemp("evaluate-page")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(base / "keras"))
        from core.data.dataset import load_dataset
        from core.train.training import train

        ds = load_dataset(make_zip(base / "colours.zip", class_entries(classes=CLASSES, per_class=10)), base / "work")
        result = train(ds, tiny_config(epochs=1, validation_split=0.3), base / "runs" / "20200101-000000-colours-abcd")
    assert result.status == "completed"
    return result.run_dir


def read_json(path: Path):
    return json.loads(path.read_text())


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def runs_dir() -> Path:
    return Path(os.environ["CLASSIFIER_RUNS_DIR"])


def load_evaluation(run: Path):
    from core.evaluate.evaluation import load_evaluation

    return load_evaluation(run)


def copy_run(trained: Path, **config) -> Path:
    """The module's run copied into this test's runs folder, with ``config`` changes written to config.json."""
    target = runs_dir() / trained.name
    shutil.copytree(trained, target)
    if config:
        write_json(target / "config.json", {**read_json(target / "config.json"), **config})
    return target


def dataset_root(run: Path) -> Path:
    return Path(read_json(run / "split.json")["root"])


def known_evaluation(run: Path, root: Path | None = None):
    """Save an evaluation of all 30 images: the first 5 of each class are wrong, with distinct confidences."""
    from core.evaluate.evaluation import compute_metrics

    root = root or dataset_root(run)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    y_true, probs = [], []
    for i, f in enumerate(files):
        t = CLASSES.index(Path(f).parent.name)
        row = [0.1, 0.1, 0.1]
        if int(Path(f).stem) < 5:
            p = 0.50 + 0.03 * ((i * 7) % 15)
            wrong = (t + 1) % 3
            row[wrong], row[t], row[3 - t - wrong] = p, (1 - p) * 0.6, (1 - p) * 0.4
        else:
            row[t] = 0.8
        y_true.append(t)
        probs.append(row)
    ev = compute_metrics(y_true, probs, CLASSES, files, top_k=2)
    ev.source, ev.split, ev.data, ev.root, ev.created = "val", "val", "colours.zip", str(root), "2024-05-01T12:00:00"
    write_json(run / FILE, ev.to_dict())
    return ev


def evaluate(at) -> None:
    """Press Evaluate: a job classifies the images (not the page's script run); wait for it, then redraw."""
    from core.jobs.kinds import EVALUATE
    from core.jobs.registry import registry

    button(at, "Evaluate this run").click().run()
    assert_clean(at)
    job = registry().get(at.session_state["eval_job"])
    assert job.kind == EVALUATE
    registry().wait(job.id, timeout=600)
    at.run()
    assert_clean(at)


def chart(at):
    """(Vega-Lite spec, data) of the page's one Altair chart besides the trust section's."""
    charts = [c for c in at.get("vega_lite_chart") if not any(t in c.proto.spec for t in TRUST_CHARTS)]
    assert len(charts) == 1, f"{len(charts)} charts"
    proto = charts[0].proto
    return json.loads(proto.spec), convert_arrow_bytes_to_pandas_df(proto.datasets[0].data.data)


def axes(spec) -> tuple[list[str], list[str]]:
    """The class names in the matrix: (columns, predicted), (rows, true), in their order."""
    enc = spec["layer"][0]["encoding"] if "layer" in spec else spec["encoding"]
    return enc["x"]["sort"], enc["y"]["sort"]


def gallery(at) -> list[str]:
    return [m for m in texts(at.markdown) if m.startswith("true **")]


def refuse_to_evaluate(monkeypatch) -> list:
    """Make ``evaluate_run`` a spy that records and refuses: the page must not call it."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("evaluate_run was called")

    monkeypatch.setattr("core.evaluate.evaluation.evaluate_run", spy)
    return calls


def spy_explain(monkeypatch) -> list:
    """Record each ``core.evaluate.explain.explain`` call the pages make: (source, class asked, layer, Explanation)."""
    import core.evaluate.explain

    calls, real = [], core.evaluate.explain.explain

    def spy(run, source, class_name=None, top_k=3, layer=core.evaluate.explain.DEFAULT_LAYER):
        e = real(run, source, class_name, top_k, layer)
        calls.append((source, class_name, layer, e))
        return e

    monkeypatch.setattr(core.evaluate.explain, "explain", spy)
    return calls


# ---------------------------------------------------------------------------------------------- Evaluate


def test_evaluate_page_without_runs_says_so():
    at = open_app("pages/evaluate.py")
    assert texts(at.title) == ["Evaluate"]
    assert "No saved model yet" in at.info[0].value
    assert [link.proto.label for link in at.get("page_link")] == ["Go to Train"]


def test_an_unevaluated_run_is_evaluated_on_request_once(trained, monkeypatch):
    run = copy_run(trained)
    at = open_app("pages/evaluate.py")
    assert at.selectbox[0].value.id == run.name
    assert "not been evaluated yet" in at.info[0].value
    assert not at.metric and not at.get("vega_lite_chart")
    assert at.radio[0].options == ["The images this run held out from training"]
    assert not (run / FILE).exists()

    evaluate(at)
    saved = load_evaluation(run)
    assert saved is not None
    assert sorted(saved.files) == sorted(read_json(run / "split.json")["val"])  # never a training image
    assert (
        metrics(at).items()
        >= {
            "Accuracy": f"{saved.accuracy:.1%}",
            "Loss": f"{saved.loss:.4f}",
            "Top-2 accuracy": f"{saved.top_k_accuracy:.1%}",  # k below the number of classes
            "Images": "9",
            "Evaluated on": "validation",
        }.items()
    )
    assert axes(chart(at)[0]) == (CLASSES, CLASSES)
    # 9 validation images are too few to fit a temperature: the calibration error is shown, unchanged
    assert metrics(at)["Calibration error (ECE)"] == f"{saved.calibration['ece_after']:.1%}"
    assert any("Not calibrated: only 9 validation images" in c for c in texts(at.caption))

    # From now on the page reads evaluation.json: reruns and later visits never classify again.
    mtime = (run / FILE).stat().st_mtime_ns
    calls = refuse_to_evaluate(monkeypatch)
    at.run()
    at.switch_page("pages/classify.py").run()
    at.switch_page("pages/evaluate.py").run()
    assert_clean(at)
    assert metrics(at)["Accuracy"] == f"{saved.accuracy:.1%}"
    assert calls == [] and (run / FILE).stat().st_mtime_ns == mtime
    assert [e.label for e in at.expander] == ["Evaluate again"]


def test_a_saved_evaluation_is_shown_without_classifying_anything(trained, monkeypatch):
    run = copy_run(trained)
    ev = known_evaluation(run)
    calls = refuse_to_evaluate(monkeypatch)
    at = open_app("pages/evaluate.py", query={"run": run.name})
    assert calls == []
    assert metrics(at) == {
        "Accuracy": "50.0%",
        "Loss": f"{ev.loss:.4f}",
        "Top-2 accuracy": f"{ev.top_k_accuracy:.1%}",
        "Images": "30",
        "Evaluated on": "validation",
    }
    assert any(
        c.startswith("30 images: the validation images of colours.zip that training held out.")
        for c in texts(at.caption)
    )


def test_confusion_matrix_names_the_classes_and_switches_to_row_shares(trained):
    run = copy_run(trained)
    ev = known_evaluation(run)
    at = open_app("pages/evaluate.py")
    spec, data = chart(at)
    assert axes(spec) == (CLASSES, CLASSES)
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["rect", "text"]  # numbers in the cells
    cells = {(r.true, r.predicted): r.count for r in data.itertuples()}
    assert cells == {(t, q): ev.confusion[i][j] for i, t in enumerate(CLASSES) for j, q in enumerate(CLASSES)}
    assert cells[("blue", "green")] == 5 and cells[("blue", "blue")] == 5
    assert spec["layer"][0]["encoding"]["color"]["field"] == "count"
    tooltip = [t["title"] for t in spec["layer"][0]["encoding"]["tooltip"]]
    assert tooltip == ["true", "predicted", "images", "share of the true class"]

    at.toggle(key="matrix_share").set_value(True).run()
    assert_clean(at)
    spec, data = chart(at)
    assert spec["layer"][0]["encoding"]["color"]["field"] == "share"
    assert spec["layer"][1]["encoding"]["text"]["field"] == "share"
    shares = {(r.true, r.predicted): r.share for r in data.itertuples()}
    assert shares[("red", "blue")] == pytest.approx(0.5) and shares[("red", "red")] == pytest.approx(0.5)

    # Order by recall, worst first: make green the worst class and it comes first.
    ev.per_class[1]["recall"] = 0.1
    write_json(run / FILE, ev.to_dict())
    at.selectbox(key="matrix_order").set_value("recall").run()
    assert axes(chart(at)[0])[0][0] == "green"


def test_many_classes_show_the_most_confused_ones_until_classes_are_picked(trained):
    from core.evaluate.evaluation import compute_metrics

    run = copy_run(trained)
    n = 30
    names = [f"class{i:02d}" for i in range(n)]
    # Class i has i of its 30 images predicted as class i-1: class i's errors are i + (i+1), class 29's 29.
    y_true, probs = [], []
    for i in range(n):
        for k in range(n):
            y_true.append(i)
            row = np.full(n, 0.1 / n)
            row[i - 1 if k < i else i] = 0.9
            probs.append(row)
    ev = compute_metrics(y_true, probs, names)
    write_json(run / FILE, ev.to_dict())
    at = open_app("pages/evaluate.py")
    spec, data = chart(at)
    columns, rows = axes(spec)
    assert columns == rows and len(columns) == 20
    assert set(columns) == set(names[10:])  # the 20 classes with the most errors
    assert columns == sorted(columns)
    assert "layer" not in spec and spec["mark"]["type"] == "rect"  # no numbers in 400 cells
    assert any(c.startswith("The 20 of 30 classes with the most errors") for c in texts(at.caption))

    at.slider(key=f"matrix_top_n_{run.name}").set_value(5).run()
    assert set(axes(chart(at)[0])[0]) == set(names[24:29])
    at.multiselect(key=f"matrix_classes_{run.name}").set_value(["class03", "class01", "class02"]).run()
    assert_clean(at)
    spec, data = chart(at)
    assert axes(spec) == (["class01", "class02", "class03"], ["class01", "class02", "class03"])
    assert len(data) == 9
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["rect", "text"]
    assert not [s for s in at.slider if s.key == f"matrix_top_n_{run.name}"]


def test_per_class_table_most_confused_pairs_and_csv(trained):
    run = copy_run(trained)
    ev = known_evaluation(run)
    at = open_app("pages/evaluate.py")
    assert texts(at.subheader)[:3] == ["Confusion matrix", "Per-class scores", "Most confused"]
    table = at.dataframe[0].value
    assert list(table["class"]) == CLASSES
    for column in ("precision", "recall", "f1", "support"):
        assert list(table[column]) == pytest.approx([r[column] for r in ev.per_class])
    assert list(table["most often predicted as"]) == ["green (5)", "red (5)", "blue (5)"]
    assert "Download per-class scores (CSV)" in [d.label for d in at.get("download_button")]
    pairs = at.dataframe[1].value
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"], strict=True)) == [
        ("blue", "green", 5),
        ("green", "red", 5),
        ("red", "blue", 5),
    ]
    assert list(pairs["share"]) == pytest.approx([50, 50, 50])  # per cent


def test_the_most_confused_pairs_are_shown_a_page_at_a_time(trained, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 2)
    run = copy_run(trained)
    known_evaluation(run)
    at = open_app("pages/evaluate.py")
    pairs = at.dataframe[1].value
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"], strict=True)) == [
        ("blue", "green", 5),
        ("green", "red", 5),
    ]
    assert "Rows 1–2 of 3 (page 1 of 2)" in texts(at.caption)
    at.button(key=f"page_next_pairs_page_{run.name}").click().run()
    assert_clean(at)
    pairs = at.dataframe[1].value
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"], strict=True)) == [("red", "blue", 5)]
    assert list(pairs["share"]) == pytest.approx([50])
    assert "Rows 3–3 of 3 (page 2 of 2)" in texts(at.caption)


def test_gallery_shows_the_worst_mistakes_first_a_page_at_a_time_with_filters(trained):
    run = copy_run(trained)
    ev = known_evaluation(run)
    at = open_app("pages/evaluate.py")
    expected = [
        f"true **{m['true']}** · predicted **{m['predicted']}** {m['probability']:.0%}" for m in ev.misclassified
    ]
    assert len(expected) == 15
    assert gallery(at) == expected[:12]
    shown = [float(m.rsplit(" ", 1)[1].rstrip("%")) for m in gallery(at)]
    assert shown == sorted(shown, reverse=True)  # worst (most confident) first
    assert [img.captions[0] for img in at.image] == [Path(m["file"]).name for m in ev.misclassified[:12]]
    assert "Images 1–12 of 15 (page 1 of 2)" in texts(at.caption)
    pages = f"gallery_shown_{run.name}_All classes_All classes"
    assert at.button(key=f"page_previous_{pages}").disabled
    at.button(key=f"page_next_{pages}").click().run()
    assert_clean(at)
    assert gallery(at) == expected[12:]  # the next page, and only it: never more than a page of thumbnails
    assert [img.captions[0] for img in at.image] == [Path(m["file"]).name for m in ev.misclassified[12:]]
    assert "Images 13–15 of 15 (page 2 of 2)" in texts(at.caption)
    assert at.button(key=f"page_next_{pages}").disabled  # the last page
    at.run()  # a rerun keeps the page
    assert gallery(at) == expected[12:]

    at.selectbox(key=f"gallery_true_{run.name}").set_value("red").run()
    assert gallery(at) and all(m.startswith("true **red** · predicted **blue**") for m in gallery(at))
    assert len(gallery(at)) == 5
    assert not [b for b in at.button if (b.key or "").startswith("page_next_gallery_shown")]  # one page: no control
    at.selectbox(key=f"gallery_true_{run.name}").set_value("All classes").run()
    assert gallery(at) == expected[:12]  # a changed filter starts at its first page
    at.selectbox(key=f"gallery_predicted_{run.name}").set_value("red").run()
    assert len(gallery(at)) == 5 and all(" · predicted **red** " in m for m in gallery(at))


def test_gallery_grad_cam_explains_the_predicted_class_once(trained, monkeypatch):
    run = copy_run(trained)
    ev = known_evaluation(run)
    calls = spy_explain(monkeypatch)
    at = open_app("pages/evaluate.py")
    thumbnails = [img.value for img in at.image]
    assert not calls  # nothing explained until asked
    at.toggle(key="gallery_gradcam").set_value(True).run()
    assert_clean(at)
    worst = ev.misclassified[:12]
    root = dataset_root(run)
    # random weights: block 3
    assert [(str(root / m["file"]), m["predicted"], "block3_conv3") for m in worst] == [c[:3] for c in calls]
    assert all(e.class_name == m["predicted"] for (*_, e), m in zip(calls, worst, strict=True))
    assert [img.captions[0].split(" · ")[0] for img in at.image] == [Path(m["file"]).name for m in worst]
    assert all(a != b for a, b in zip(thumbnails, [img.value for img in at.image], strict=True))
    assert any("from layer block3_conv3" in c for c in texts(at.caption))
    at.run()  # cached: no image is explained twice
    assert len(calls) == 12


def test_a_run_whose_images_are_gone_says_so(trained):
    run = copy_run(trained)
    split = read_json(run / "split.json")
    write_json(run / "split.json", {**split, "root": str(run.parent / "deleted-dataset")})
    at = open_app("pages/evaluate.py")
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The images this run held out from training are no longer on disk")
    assert not [b for b in at.button if b.label == "Evaluate this run"]
    assert not at.metric


def test_a_saved_evaluation_whose_images_are_gone_lists_their_names(trained, tmp_path):
    run = copy_run(trained)
    root = tmp_path / "copy"
    shutil.copytree(dataset_root(run), root)
    ev = known_evaluation(run, root)
    shutil.rmtree(root)
    at = open_app("pages/evaluate.py")
    assert_clean(at)
    assert metrics(at)["Accuracy"] == "50.0%"  # the scores stay
    assert any(w.value.startswith("These images are no longer on disk") for w in at.warning)
    assert not at.image and not gallery(at)
    names = at.dataframe[2].value
    assert list(names["file"]) == [m["file"] for m in ev.misclassified]


def test_the_names_of_gone_images_are_listed_a_page_at_a_time(trained, tmp_path, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 10)
    run = copy_run(trained)
    root = tmp_path / "copy"
    shutil.copytree(dataset_root(run), root)
    ev = known_evaluation(run, root)
    shutil.rmtree(root)
    at = open_app("pages/evaluate.py")
    files = [m["file"] for m in ev.misclassified]
    assert list(at.dataframe[2].value["file"]) == files[:10]
    assert "Rows 1–10 of 15 (page 1 of 2)" in texts(at.caption)
    at.button(key=f"page_next_gallery_names_{run.name}_All classes_All classes").click().run()
    assert_clean(at)
    assert list(at.dataframe[2].value["file"]) == files[10:]
    assert "Rows 11–15 of 15 (page 2 of 2)" in texts(at.caption)


def test_the_dataset_page_dataset_evaluates_a_run_whose_images_are_gone(trained, tmp_path):
    from core.workspace.datasets import save_zip

    run = copy_run(trained)
    split = read_json(run / "split.json")
    write_json(run / "split.json", {**split, "root": str(tmp_path / "deleted")})
    saved = save_zip(make_zip(tmp_path / "again.zip", class_entries(classes=CLASSES, per_class=10)))
    at = open_app("pages/evaluate.py", dataset=saved.id)
    assert not at.error
    assert at.radio[0].options == ["The dataset on the Dataset page (again.zip)"]
    evaluate(at)
    ev = load_evaluation(run)
    # A saved dataset is split by content hash (core.data.dataset.split_dataset), not by the seed the run's own zip
    # was shuffled with: the validation images its versions would hold out at the run's fraction.
    from core.data.dataset import split_dataset
    from core.workspace.datasets import open_dataset
    from core.workspace.runs import read_run

    ds = open_dataset(saved.id)
    held_out = sorted(ds.items[i].path for i in split_dataset(ds, read_run(run).config)[1])
    assert (ev.source, ev.split, ev.images) == ("given data", "val", len(held_out))
    assert sorted(ev.files) == held_out
    assert any(f"{len(held_out)} images: the validation images of again.zip (its val/ folder, or" in c
               for c in texts(at.caption))  # fmt: skip
    assert len(gallery(at)) == len(ev.misclassified[:12])


def test_the_session_s_latest_run_is_chosen_unless_the_address_names_one(trained):
    first = copy_run(trained)
    second = runs_dir() / "20300101-000000-later-0001"
    shutil.copytree(trained, second)
    write_json(second / "run.json", {**read_json(second / "run.json"), "finished": "2030-01-01T00:00:00"})
    assert open_app("pages/evaluate.py").selectbox[0].value.id == second.name  # newest
    assert open_app("pages/evaluate.py", current_job=first.name).selectbox[0].value.id == first.name
    at = open_app("pages/evaluate.py", query={"run": second.name}, current_job=first.name)
    assert at.selectbox[0].value.id == second.name


# ---------------------------------------------------------------------------------------------- Classify


def classify_one(at, name="red.jpg"):
    at.file_uploader[0].set_value([(name, jpeg_bytes(COLORS["red"], seed=7), "image/jpeg")]).run()
    assert_clean(at)
    return at


def test_classify_shows_grad_cam_for_the_top_class_and_for_a_picked_class(trained, monkeypatch):
    copy_run(trained)
    calls = spy_explain(monkeypatch)
    at = classify_one(open_app("pages/classify.py"))
    assert len(at.image) == 1 and not calls  # nothing explained until asked
    top = at.markdown[0].value.split("**")[1]
    at.toggle(key="gradcam_0_red.jpg").set_value(True).run()
    assert_clean(at)
    assert at.selectbox(key="gradcam_class_0_red.jpg").value == top
    layer = at.selectbox(key="gradcam_layer_0_red.jpg")
    assert layer.value == "block3_conv3" and layer.options[-1] == "block5_conv3"
    assert any("started from random weights" in c for c in texts(at.caption))
    assert [img.captions[0] for img in at.image] == [
        "red.jpg",
        f"Grad-CAM of {top} · block3_conv3 (32×32 px, as the model saw it)",
    ]
    assert [(c, layer, e.class_name) for _, c, layer, e in calls] == [(top, "block3_conv3", top)]
    e = calls[0][3]
    assert e.overlay.shape == (32, 32, 3) and not np.array_equal(e.overlay, e.image)

    other = next(c for c in CLASSES if c != top)
    at.selectbox(key="gradcam_class_0_red.jpg").set_value(other).run()
    at.selectbox(key="gradcam_layer_0_red.jpg").set_value("block5_conv3").run()
    assert_clean(at)
    assert at.image[1].captions[0] == f"Grad-CAM of {other} · block5_conv3 (32×32 px, as the model saw it)"
    assert [(c, layer) for _, c, layer, _ in calls] == [
        (top, "block3_conv3"),
        (other, "block3_conv3"),
        (other, "block5_conv3"),
    ]
    assert calls[-1][3].class_name == other

    at.toggle(key="gradcam_0_red.jpg").set_value(False).run()
    assert len(at.image) == 1
    assert not any("started from random weights" in c for c in texts(at.caption))  # no map, no caveat


def test_classify_says_the_random_weights_caveat_once_for_many_images(trained):
    copy_run(trained)
    at = open_app("pages/classify.py")
    images = [(f"{c}.jpg", jpeg_bytes(COLORS[c], seed=9), "image/jpeg") for c in ("red", "green", "blue")]
    at.file_uploader[0].set_value(images).run()
    for name, _, _ in images:
        at.toggle(key=f"gradcam_{[n for n, _, _ in images].index(name)}_{name}").set_value(True)
    at.run()
    assert_clean(at)
    assert len(at.image) == 6  # each photo and its map
    assert sum("started from random weights" in c for c in texts(at.caption)) == 1


def test_classify_grad_cam_starts_at_the_last_convolution_for_pretrained_weights(trained, monkeypatch):
    copy_run(trained, weights="imagenet")  # the same model; only the recorded recipe differs
    calls = spy_explain(monkeypatch)
    at = classify_one(open_app("pages/classify.py"))
    at.toggle(key="gradcam_0_red.jpg").set_value(True).run()
    assert_clean(at)
    assert at.selectbox(key="gradcam_layer_0_red.jpg").value == "block5_conv3"
    assert not any("random weights" in c for c in texts(at.caption))
    top = at.selectbox(key="gradcam_class_0_red.jpg").value
    assert [(c, layer) for _, c, layer, _ in calls] == [(top, "block5_conv3")]


def test_two_classes_show_no_top_k_accuracy(trained):
    from core.evaluate.evaluation import compute_metrics

    run = copy_run(trained)
    files = ["red/0.jpg", "red/1.jpg", "blue/0.jpg", "blue/1.jpg"]
    ev = compute_metrics(
        [0, 0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]], ["red", "blue"], files, top_k=2
    )
    ev.source, ev.split, ev.data, ev.created = "val", "val", "colours.zip", "2024-05-01T12:00:00"
    write_json(run / FILE, ev.to_dict())
    at = open_app("pages/evaluate.py")
    assert_clean(at)
    assert metrics(at)["Accuracy"] == "75.0%"
    assert not [label for label in metrics(at) if label.startswith("Top-")]  # top-2 of 2 classes is always 100 %


# ---------------------------------------------------------------------------------------------- trust


def trusted_evaluation(run: Path, temperature: float = 2.0):
    """known_evaluation with its calibration measured, and a calibration.json as training writes it."""
    from core.model import calibration

    ev = known_evaluation(run)
    y = [CLASSES.index(Path(f).parent.name) for f in ev.files]
    probs = np.full((len(y), 3), 0.05)
    for i, t in enumerate(y):
        probs[i, t if i % 4 else (t + 1) % 3] = 0.9  # one in four is wrong at 90 %: overconfident
    probs /= probs.sum(1, keepdims=True)
    report = calibration.calibrate(probs, y)
    calibration.save(run, report)
    ev.calibration = calibration.on_images(
        calibration.rescale(probs, report.temperature), y, report.temperature, report.threshold
    )
    write_json(run / FILE, ev.to_dict())
    return ev, report


def test_the_trust_section_shows_calibration_and_saves_a_moved_threshold(trained):
    from core.model import calibration

    run = copy_run(trained)
    ev, report = trusted_evaluation(run)
    assert report.calibrated and report.temperature > 1
    at = open_app("pages/evaluate.py", query={"run": run.name})
    shown = metrics(at)
    assert shown["Calibration error (ECE)"] == f"{ev.calibration['ece_after']:.1%}"
    assert shown["Temperature"] == f"{report.temperature:.2f}"
    kinds = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(kinds) >= 2  # the reliability diagram and the coverage curve
    assert any("fitted on 30 validation images" in c for c in texts(at.caption))

    # No threshold reaches 95 % (three in four are right at the same confidence): every answer is given.
    toggle, slider = f"threshold_answer_all_{run.name}", f"threshold_{run.name}"
    assert report.threshold is None and at.toggle(key=toggle).value is True
    at.toggle(key=toggle).set_value(False).run()
    assert_clean(at)
    at.slider(key=slider).set_value(0.95).run()
    assert "Answers none of the validation images: none reaches 95% confidence." in texts(at.markdown)
    at.slider(key=slider).set_value(0.5).run()
    assert any(m.startswith("Answers 100% of the validation images") for m in texts(at.markdown))
    at.slider(key=slider).set_value(0.95).run()
    button(at, "Save threshold").click().run()
    assert_clean(at)
    saved = calibration.load(run)
    assert saved.threshold == pytest.approx(0.95) and saved.threshold_source == "user"
    assert saved.temperature == report.temperature  # only the threshold changed

    again = open_app("pages/evaluate.py", query={"run": run.name})  # a reload, or a colleague
    assert again.toggle(key=toggle).value is False and again.slider(key=slider).value == pytest.approx(0.95)
    assert any("Saved by a user: 95%" in c for c in texts(again.caption))


def test_an_evaluation_made_before_calibration_existed_says_to_evaluate_again(trained):
    run = copy_run(trained)
    known_evaluation(run)
    at = open_app("pages/evaluate.py", query={"run": run.name})
    assert any("made before calibration was measured" in i.value for i in at.info)
