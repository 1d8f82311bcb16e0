"""The "none of these" answer on the pages, through AppTest: Classify and the demo say it clearly, Evaluate reports the
threshold, the false alarms and the histogram of scores, the Dataset page counts a zip's "other" images.

The module's run (conftest's trained_run) gets a "none of these" record written by the test: a fit on made
features of the run's size, with a threshold chosen to flag every image or none, so that the pages are tested on
what they show, not on how well a one-epoch run tells images apart (tests/core/train/test_none_of_these.py does).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from conftest import COLORS, encoded, jpeg_bytes, make_zip
from pagetest import APP, SCRIPT_TIMEOUT, assert_clean, copy_run, metrics, open_app, texts
from streamlit.testing.v1 import AppTest

from core.model import ood
from core.workspace import share


def record(run, threshold: float | None = None):
    """A "none of these" record for ``run`` (its feature size read from config: the small-fc head's 256); with
    ``threshold`` replacing the fitted one (-1: every image is flagged, 1e30: none)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (60, 256)), np.arange(60) % 3
    state = ood.fit_run(x[:45], y[:45], x[45:], y[45:], ["blue", "green", "red"], rate=0.05)
    if threshold is not None:
        state.threshold = threshold
    ood.save(run, state)
    return state


def photos() -> list[tuple[str, bytes, str]]:
    return [("red.jpg", jpeg_bytes(COLORS["red"], seed=7), "image/jpeg"),
            ("blue.jpg", jpeg_bytes(COLORS["blue"], seed=8), "image/jpeg")]  # fmt: skip


def test_classify_answers_none_of_these_clearly(trained_run):
    run = copy_run(trained_run)
    record(run, threshold=-1.0)
    at = open_app("pages/classify.py")
    assert any("It answers “none of these” for an image unlike every class" in c for c in texts(at.caption))
    at.file_uploader[0].set_value(photos()).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["answer"]) == ["none of these", "none of these"]
    assert table["note"][0] == "Unlike every class this model was trained on"
    shown = [m for m in texts(at.markdown) if m.startswith("**None of these** · closest ")]
    assert len(shown) == 2 and shown[0].split("closest ")[1].split(" at ")[0] in ("blue", "green", "red")
    assert any("is above the" in c for c in texts(at.caption))
    assert len(at.get("vega_lite_chart")) == 2  # the closest classes are still drawn


def test_classify_answers_as_before_when_nothing_is_flagged_or_the_run_cannot_say(trained_run):
    run = copy_run(trained_run)
    record(run, threshold=1e30)
    at = open_app("pages/classify.py")
    at.file_uploader[0].set_value(photos()[:1]).run()
    assert_clean(at)
    assert not any(m.startswith("**None of these**") for m in texts(at.markdown))
    (run / ood.FILE).unlink()
    (run / ood.ARRAYS).unlink()
    other = copy_run(trained_run, "20190101-000000-older-0001", finished="2019-01-01T00:00:00")
    at = open_app("pages/classify.py", query={"run": other.name})
    assert not any("none of these" in c for c in texts(at.caption))  # a run that cannot say says nothing of it


def test_the_demo_says_none_of_these_in_large(trained_run):
    run = copy_run(trained_run)
    record(run, threshold=-1.0)
    at = AppTest.from_file(APP, default_timeout=SCRIPT_TIMEOUT)
    at.query_params.update({"demo": run.name, "key": share.share(run)})
    at.run()
    at.file_uploader[0].set_value(photos()[0]).run()
    assert_clean(at)
    assert [m for m in texts(at.markdown) if m.startswith("## ")] == ["## None of these"]
    assert any(m.startswith("This photo is unlike every class the model knows. The closest is **")
               for m in texts(at.markdown))  # fmt: skip


def evaluation_with(run, report: dict | None):
    """An evaluation.json of the run's classes with this "none of these" report (None: one made before it)."""
    from core.evaluate.evaluation import compute_metrics

    ev = compute_metrics([0, 1, 2] * 4, np.full((12, 3), 1 / 3) + np.eye(3)[[0, 1, 2] * 4], ["blue", "green", "red"])
    ev.source, ev.split, ev.data, ev.created = "val", "val", "colours.zip", "2024-05-01T12:00:00"
    if report is not None:
        ev.none_of_these = report
    (run / "evaluation.json").write_text(json.dumps(ev.to_dict()))


def assessed(run, state: ood.State) -> dict:
    """What core.evaluate.none_of_these.assess reports, with a stand-in for the model's forward pass (slow)."""
    from core.evaluate.none_of_these import assess

    rng = np.random.default_rng(1)
    fake = SimpleNamespace(
        ood=state,
        path=run,
        config=SimpleNamespace(image_size=32),
        outputs=lambda images: (None, rng.gamma(9, 40, len(images)) + 2 * state.threshold, None),
    )
    return assess(fake, rng.gamma(9, 20, 12))  # fmt: skip


def test_evaluate_reports_the_threshold_the_false_alarms_and_a_histogram_of_scores(trained_run):
    run = copy_run(trained_run)
    state = record(run)
    evaluation_with(run, assessed(run, state))
    at = open_app("pages/evaluate.py")
    assert "“None of these”: images unlike every class" in texts(at.subheader)
    shown = metrics(at)
    assert shown["Threshold (score)"] == f"{state.threshold:,.4g}" and shown["Target false alarms"] == "5%"
    assert "False alarms on these validation images" in shown
    sources = next(d.value for d in at.dataframe if "auroc" in d.value.columns)
    assert list(sources["label"][:2]) == ["uniform noise (made)", "flat colours (made)"]
    assert sources["flagged"][0] == 1.0 and sources["auroc"][0] > 0.99  # made to score far above the threshold
    assert "**Scores: the evaluated images against images unlike every class**" in texts(at.markdown)
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    histograms = [s for s in specs if "layer" in s and s["layer"][0]["encoding"]["x"].get("title", "").startswith(
        "“none of these” score")]  # fmt: skip
    assert len(histograms) == 1 and histograms[0]["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    assert [e.label for e in at.expander if e.label.startswith("Each class held out")] == [
        "Each class held out in turn (3)"
    ]
    assert any("folder named `__other__`" in c for c in texts(at.caption))  # no real "other" images yet


def test_evaluate_says_when_a_run_cannot_say_or_the_evaluation_is_older(trained_run):
    run = copy_run(trained_run)
    evaluation_with(run, {"available": False, "reason": "only 3 validation images; the threshold needs at least 10."})
    at = open_app("pages/evaluate.py")
    assert_clean(at)
    assert any(c.startswith("This run cannot answer “none of these”: only 3 validation images") for c in
               texts(at.caption))  # fmt: skip
    evaluation_with(run, None)
    at = open_app("pages/evaluate.py")
    assert any("made before “none of these” was measured" in c for c in texts(at.caption))


def test_the_dataset_page_counts_the_other_images_apart_from_the_classes(tmp_path):
    from conftest import class_entries
    from PIL import Image

    from core.workspace.datasets import save_zip

    noise = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)) for i in range(4)]
    entries = class_entries(per_class=6) | {f"__other__/{i}.png": encoded(im) for i, im in enumerate(noise)}
    saved = save_zip(make_zip(tmp_path / "with-other.zip", entries))
    at = open_app("pages/dataset.py", query={"dataset": saved.id})
    assert metrics(at)["Classes"] == "2" and metrics(at)["Images"] == "12"
    assert any(c.startswith("4 “other” images in its `__other__` folder: not a class") for c in texts(at.caption))
