"""The model card, made from a real trained run: its numbers read back from the run's own files, the confusion
matrix image, escaping, the limits only where they apply, who may write the purpose, the files it writes."""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from core.evaluate.evaluation import evaluate_run, load_evaluation
from core.imaging.spec import preprocessing_spec
from core.model import calibration
from core.publish.card import facts, figures, render
from core.publish.card.facts import percent
from core.util.errors import UserError
from core.workspace import access, runs


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory) -> Path:
    """A copy of the module's run, evaluated for real on its validation images (their folder is still there)."""
    run = tmp_path_factory.mktemp("card") / trained_run.name
    shutil.copytree(trained_run, run)
    evaluate_run(run)
    return run


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """This test's own copy of the (not evaluated) run: tests write card.json and edit files in it."""
    return Path(shutil.copytree(trained_run, tmp_path / "plain" / trained_run.name))


@pytest.fixture
def evaluated(evaluated_run, tmp_path) -> Path:
    return Path(shutil.copytree(evaluated_run, tmp_path / "evaluated" / evaluated_run.name))


def read(run: Path, name: str):
    return json.loads((run / name).read_text())


def edit(run: Path, name: str, **changes) -> None:
    runs.write_json(run / name, {**read(run, name), **changes})


def both(run: Path, **kwargs) -> tuple[str, str]:
    return render.markdown(run, **kwargs), render.html(run, **kwargs)


def test_the_card_shows_the_runs_own_numbers(evaluated):
    metrics, ev = read(evaluated, "metrics.json"), read(evaluated, "evaluation.json")
    report, config = read(evaluated, "dataset.json"), read(evaluated, "config.json")
    sha = hashlib.sha256((evaluated / "model.keras").read_bytes()).hexdigest()
    md, page = both(evaluated)

    expected = [
        evaluated.name,
        report["source"],
        f"{report['total']} images",
        percent(metrics["val_accuracy"]),
        f"{metrics['val_loss']:.4f}",
        f"{metrics['epochs_completed']} of {config['epochs']}",
        percent(ev["accuracy"]),
        f"{ev['loss']:.4f}",
        sha,
        f"{config['image_size']} × {config['image_size']}",
        importlib.metadata.version("numpy"),
        facts.PLACEHOLDER,  # nobody wrote a purpose yet
        calibration.load(evaluated).reason,  # 3 validation images: not calibrated, and the card says why
    ]
    for row in ev["per_class"]:
        expected += [row["class"], percent(row["precision"]), percent(row["recall"])]
    for text in expected:
        assert text in md, text
        assert html.escape(text) in page, text
    # The preprocessing is core.imaging.pillow' own description, word for word.
    for step in preprocessing_spec(config["image_size"], config["resize"])["geometry"]:
        assert step in md and html.escape(step) in page
    assert render.image_markdown("confusion_matrix.png") in md
    assert 'src="data:image/png;base64,' in page

    found = facts.facts(evaluated)
    assert found["metrics"]["val_accuracy"] == metrics["val_accuracy"]
    assert found["evaluation"]["confusion"] == ev["confusion"]
    assert found["model"]["sha256"] == sha
    assert [r["class"] for r in found["dataset"]["classes"]] == read(evaluated, "classes.json")
    # Per class, the images the run really trained and validated on (split.json) add up to metrics.json's totals.
    assert sum(r["train"] for r in found["dataset"]["classes"]) == metrics["train_images"]
    assert sum(r["val"] for r in found["dataset"]["classes"]) == metrics["val_images"]
    json.dumps(found)  # plain data


def test_calibration_and_the_not_sure_threshold_come_from_calibration_json(run):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    logits = rng.normal(0, 1, (60, 3)) + 4 * np.eye(3)[labels]  # overconfident and mostly right
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    calibration.save(run, calibration.calibrate(probs, labels))
    saved = calibration.load(run)
    assert saved.calibrated and saved.threshold is not None

    md, page = both(run)
    for text in (
        f"{percent(saved.ece_before)} → {percent(saved.ece_after)}",
        f"temperature {saved.temperature:.2f}",
        f"below {percent(saved.threshold)} confidence",
        f"answers {percent(saved.coverage)} of the validation images",
        f"{percent(saved.accepted_accuracy)} of those answers are right",
    ):
        assert text in md, text
        assert html.escape(text) in page, text


def test_none_of_these_is_a_section_from_the_runs_none_of_these_json(run):
    md, page = both(run)  # 3 validation images: the run cannot say, and the card says why
    assert "## None of these" in md and "This run cannot answer “none of these”: only 3 validation images" in md
    assert facts.facts(run)["none_of_these"]["available"] is False
    edit(run, "none_of_these.json", fitted=True, format=1, method="mahalanobis-tied-ledoit-wolf", rate=0.05,
         threshold=436.3648, validation_images=40, validation_flagged=0.075)  # fmt: skip
    found = facts.none_of_these(run)
    assert found["available"] and found["threshold"] == 436.3648 and found["rate"] == 0.05
    md, page = both(run)
    section = md.split("## None of these", 1)[1].split("\n## ", 1)[0]
    for text in ("Mahalanobis", "Ledoit-Wolf", "**Target false-alarm rate:** 5.0%", "**Threshold (score):** 436.365",
                 "**Validation images flagged:** 7.5% of 40"):  # fmt: skip
        assert text in section, text
    assert "None of these" in page and "436.365" in page
    (run / "none_of_these.json").unlink()
    assert "trained before “none of these” existed" in render.markdown(run)


def test_the_confusion_matrix_is_a_png_with_one_cell_per_class_pair(evaluated, run):
    assert figures.confusion_png(run) is None  # not evaluated: no matrix
    ev = load_evaluation(evaluated)
    img = Image.open(io.BytesIO(figures.confusion_png(evaluated)))
    assert img.format == "PNG"
    img.load()
    left, top, cell = figures.confusion_geometry(ev.classes)
    n = len(ev.classes)
    assert img.size == (left + n * cell + figures.PAD, top + n * cell + figures.PAD)
    # Shaded by row share: a cell's corner (away from its count) is darker the larger the share of its row.
    for i, row in enumerate(ev.confusion):
        shades = [sum(img.getpixel((left + j * cell + 3, top + i * cell + 3))) for j in range(n)]
        if sum(row):
            assert shades.index(min(shades)) == row.index(max(row))
        assert all(s == sum((255, 255, 255)) for s, count in zip(shades, row, strict=True) if count == 0)
    # More classes, a larger image; a long class name does not widen it beyond its cut.
    many = [f"class {k}" for k in range(12)]
    bigger = Image.open(io.BytesIO(figures.draw_confusion(many, np.eye(12, dtype=int).tolist())))
    assert bigger.width > img.width and bigger.height > img.height
    long_names = ["x" * 200, "y"]
    assert figures.confusion_geometry(long_names) == figures.confusion_geometry(["x" * 30, "y"])


def test_html_escapes_what_the_owner_typed(run):
    hostile = '<script>alert("card")</script> & <img src=x onerror=alert(1)>'
    facts.set_purpose(run, hostile)
    md, page = both(run)
    assert "<script" not in page and "<img src=x" not in page
    assert html.escape(hostile) in page
    assert "<script" not in md and "<img" not in md  # '<' as an entity: no tag wherever the Markdown renders
    assert facts.purpose(run) == hostile


def limits(run: Path) -> set[str]:
    return {x["key"] for x in facts.facts(run)["limits"]}


def test_limits_appear_only_when_they_apply(run, evaluated):
    # The fixture: random weights, 3 validation images, not evaluated; balanced classes, no leaks, completed.
    assert read(run, "config.json")["weights"] == "none"
    assert limits(run) == {"random_weights", "small_validation", "not_evaluated"}
    md = render.markdown(run)
    assert "started from random weights, not ImageNet" in md
    assert "imbalanced" not in md and "stopped early" not in md

    assert "not_evaluated" not in limits(evaluated)

    report = read(run, "dataset.json")
    report["counts"]["red"] = {"all": 30}  # 30 red against 10 of the others: 3×
    runs.write_json(run / "dataset.json", report)
    edit(run, "metrics.json", val_duplicates=2, test_duplicates=1, val_images=12)
    edit(run, "config.json", weights="imagenet")
    edit(run, runs.MARKER, status="stopped")
    assert limits(run) == {"imbalance", "leaks", "not_evaluated", "stopped"}
    md, page = both(run)
    for text in (
        "'red' has 30 images",
        "2 validation images and 1 test image are exact or near copies of training images",
        "Training was stopped early: 1 of 1 epochs completed.",
    ):
        assert text in md and html.escape(text) in page, text
    assert "random weights" not in md

    edit(run, "config.json", class_weight="balanced")
    assert "training weighed the classes to make up for it" in render.markdown(run)


def test_set_purpose_is_for_the_owner_and_admins_only(run, monkeypatch):
    edit(run, runs.MARKER, owner="ann@example.com")
    with pytest.raises(access.NotAllowed, match=r"Only ann@example\.com or an admin"):
        facts.set_purpose(run, "Mine now.", "bob@example.com")
    with pytest.raises(UserError):
        facts.set_purpose(run, "A guest's words.")
    assert facts.purpose(run) == ""

    facts.set_purpose(run, "  Sorts red from blue for the paint shop.  ", "ann@example.com")
    assert facts.purpose(run) == "Sorts red from blue for the paint shop."
    assert read(run, facts.PURPOSE_FILE)["by"] == "ann@example.com"
    monkeypatch.setenv("CLASSIFIER_ADMINS", "root@example.com")
    facts.set_purpose(run, "Checked by an admin.", "root@example.com")
    assert "Checked by an admin." in render.markdown(run)


def test_write_puts_the_card_its_page_and_the_matrix_side_by_side(evaluated, run, tmp_path):
    parity = [
        {"format": "onnx", "images": 3, "top1_agreement": 1.0, "max_abs_diff": 2.5e-07, "passed": True},
        {"format": "tflite", "images": 3, "top1_agreement": 2 / 3, "max_abs_diff": 0.41, "passed": False},
    ]
    written = render.write(evaluated, tmp_path / "out", parity=parity)
    assert sorted(p.name for p in written) == ["MODEL_CARD.md", "confusion_matrix.png", "model_card.html"]
    md = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    page = (tmp_path / "out" / "model_card.html").read_text()
    assert "![Confusion matrix](confusion_matrix.png)" in md
    assert Image.open(tmp_path / "out" / "confusion_matrix.png").format == "PNG"
    for text in ("| onnx | 3 | 100.0% | 2.5e-07 | yes |", "| tflite | 3 | 66.7% | 0.41 | no |"):
        assert text in md
    assert "<td>tflite</td>" in page and '<td class="num">66.7%</td>' in page
    assert "| Format | Images |" in md  # no input column when the rows name none
    inputs = [{**parity[0], "input": "decoded pixels"}, {**parity[0], "input": "encoded bytes", "max_abs_diff": 0.0}]
    assert "| onnx | encoded bytes | 3 | 100.0% | 0 | yes |" in render.markdown(evaluated, parity=inputs)
    assert "Exports checked" not in render.markdown(evaluated)  # no parity given: no section

    # Without an image file the Markdown stands alone: the matrix as a table of counts.
    alone = render.markdown(evaluated, image_name=None)
    assert "confusion_matrix.png" not in alone
    for name, row in zip(load_evaluation(evaluated).classes, load_evaluation(evaluated).confusion, strict=True):
        assert f"| {name} | " + " | ".join(map(str, row)) + " |" in alone

    # Not evaluated: no matrix, no image reference, two files.
    written = render.write(run, tmp_path / "plain")
    assert sorted(p.name for p in written) == ["MODEL_CARD.md", "model_card.html"]
    assert "confusion_matrix.png" not in (tmp_path / "plain" / "MODEL_CARD.md").read_text()


def test_a_folder_that_is_no_run_or_a_damaged_run_is_a_users_error(run, tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        facts.facts(tmp_path / "nothing")
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(facts.CardError, match=r"damaged: its metrics\.json cannot be read"):
        render.markdown(run)
    (run / "metrics.json").unlink()
    with pytest.raises(facts.CardError, match=r"no metrics\.json"):
        render.html(run)
    runs.write_json(run / "metrics.json", {})
    runs.write_json(run / "config.json", ["not", "a", "config"])
    with pytest.raises(facts.CardError, match=r"config\.json"):
        facts.facts(run)


def test_the_card_never_loads_tensorflow():
    code = (
        "import sys, core.publish.card.render, ui.card_views; "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted({'tensorflow', 'keras'} & set(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
