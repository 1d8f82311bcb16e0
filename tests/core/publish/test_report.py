"""The deployment report's rules on hand-made numbers: which losses against the app warn, and in which words; the
format names of today and of before. (The report of a real export is tested in test_export.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from core.publish import report
from core.publish.bundles import FORMATS, parse_formats
from core.util.errors import UserError

CLASSES = ["ants", "bees"]


def answers(right: list[bool], labels: list[int]) -> np.ndarray:
    """Probabilities that name the true class where ``right``, the other one elsewhere."""
    probs = np.full((len(labels), 2), 0.1)
    for i, (ok, y) in enumerate(zip(right, labels, strict=True)):
        probs[i, y if ok else 1 - y] = 0.9
    return probs


def row(app_right: list[bool], export_right: list[bool], labels: list[int]) -> dict:
    app, got = answers(app_right, labels), answers(export_right, labels)
    latency = [{"threads": 1, "p50_ms": 2.0, "runs": 20}, {"threads": 4, "p50_ms": 1.0, "runs": 20}]
    return report.format_row("litert-int8", "model_int8.tflite", 1000, "square uint8", got, app, labels, CLASSES,
                             latency)  # fmt: skip


def test_a_class_losing_three_points_warns_and_one_point_does_not():
    labels = [0] * 100 + [1] * 100
    app_right = [True] * 200
    three = [i not in (0, 1, 2) for i in range(200)]  # three ants now wrong: 100 % → 97 %, agreement 98.5 %
    r = row(app_right, three, labels)
    assert r["per_class"][0] == {"class": "ants", "images": 100, "accuracy": pytest.approx(0.97)}
    assert r["agreement"] == pytest.approx(0.985)
    assert r["warnings"] == [
        "litert-int8: class 'ants' loses 3.0 points (100.0 % → 97.0 %); agreement 98.5 % is below 99 %"
    ]
    one = [i != 0 for i in range(200)]  # one ant: 1 point, agreement 99.5 %
    assert row(app_right, one, labels)["warnings"] == []


def test_agreement_below_99_percent_warns_even_when_no_class_loses():
    app = {"per_class": [{"class": "ants", "accuracy": 0.9}, {"class": "bees", "accuracy": 0.8}]}
    same = {"format": "onnx", "agreement": 0.98, "per_class": app["per_class"]}
    assert report.warnings_for(same, app) == ["onnx: agreement 98.0 % is below 99 %"]
    assert report.warnings_for({**same, "agreement": 0.99}, app) == []
    lost = {
        **same,
        "agreement": 1.0,
        "per_class": [{"class": "ants", "accuracy": 0.9}, {"class": "bees", "accuracy": 0.78}],
    }
    assert report.warnings_for(lost, app) == []  # exactly 2 points: not more than 2
    lost["per_class"][1]["accuracy"] = 0.779
    assert report.warnings_for(lost, app) == ["onnx: class 'bees' loses 2.1 points (80.0 % → 77.9 %)"]
    gained = {**same, "agreement": 1.0, "per_class": [{"class": "ants", "accuracy": 1.0}]}
    assert report.warnings_for(gained, app) == []
    # the brief's own example
    example = {"format": "litert-int8", "agreement": 0.975, "per_class": [{"class": "bees", "accuracy": 0.868}]}
    assert report.warnings_for(example, {"per_class": [{"class": "bees", "accuracy": 0.91}]}) == [
        "litert-int8: class 'bees' loses 4.2 points (91.0 % → 86.8 %); agreement 97.5 % is below 99 %"
    ]


def test_the_report_collects_the_warnings_and_writes_them_as_markdown():
    labels = [0] * 10 + [1] * 10
    rows = [row([True] * 20, [True] * 20, labels), row([True] * 20, [i != 15 for i in range(20)], labels)]
    rows[0]["format"] = "litert"
    app = report.scores(answers([True] * 20, labels), labels, CLASSES)
    assert app["accuracy"] == 1.0 and app["ece"] == pytest.approx(0.1)  # 90 % sure, always right
    made = report.deployment("run-1", CLASSES, rows, app, "20 validation images", "20 training images", 4)
    assert made["warnings"] == [
        "litert-int8: class 'bees' loses 10.0 points (100.0 % → 90.0 %); agreement 95.0 % is below 99 %"
    ]
    text = report.report_markdown(made)
    assert "| litert | 0.0 MB | 2.00 ms | 1.00 ms | 100.0 % | 100.0 % | 0.100 |" in text
    assert "| bees | 10 | 100.0 % | 100.0 % | 90.0 % |" in text
    assert "## Warnings" in text and "calibrated on 20 training images" in text
    assert report.p50(rows[0], "one") == 2.0 and report.p50(rows[0], "all") == 1.0


def test_formats_by_name_and_by_their_earlier_names():
    assert parse_formats("saved_model,litert-int8") == ("saved_model", "litert-int8")
    assert parse_formats(["onnx", "savedmodel"]) == ("saved_model", "onnx")  # in the order they are made
    assert parse_formats("all") == parse_formats(None) == FORMATS
    assert parse_formats(" litert_fp16 , tflite ") == ("litert", "litert-fp16")
    for bad in ("saved_model,pickle", "", ","):
        with pytest.raises(UserError, match="Unknown export format") as caught:
            parse_formats(bad)
        assert str(caught.value).count(".") == 1 and "choose from saved_model, litert" in str(caught.value)


def test_none_of_these_agreement_is_a_column_and_a_warning_only_for_a_run_that_can_say_it():
    labels = [0] * 10 + [1] * 10
    probs = answers([True] * 20, labels)
    latency = [{"threads": 1, "p50_ms": 2.0, "runs": 20}, {"threads": 4, "p50_ms": 1.0, "runs": 20}]
    app_flags = np.array([False] * 18 + [True] * 2)
    int8_flags = np.array([False] * 20)  # misses both
    rows = [
        report.format_row("onnx", "model.onnx", 1000, "square uint8", probs, probs, labels, CLASSES, latency,
                          (app_flags.copy(), app_flags)),
        report.format_row("litert-int8", "model_int8.tflite", 250, "square uint8", probs, probs, labels, CLASSES,
                          latency, (int8_flags, app_flags)),
    ]  # fmt: skip
    assert rows[0]["none_of_these_agreement"] == 1.0 and rows[0]["warnings"] == []
    assert rows[1]["none_of_these_agreement"] == pytest.approx(0.9)
    assert rows[1]["warnings"] == ["litert-int8: “none of these” agrees with the app on 90.0 % of the images"]
    unlike = {"method": "mahalanobis-tied-ledoit-wolf", "threshold": 436.4, "rate": 0.05, "flagged": 0.1}
    app = report.scores(probs, labels, CLASSES)
    made = report.deployment("run-1", CLASSES, rows, app, "20 validation images", None, 4, unlike)
    header, table = report.table(made)
    assert header[-1] == "None-of-these agreement" and [r[-1] for r in table] == ["", "100.0 %", "90.0 %"]
    text = report.report_markdown(made)
    assert (
        "an image scoring above 436.4 is unlike every class (a threshold chosen so that 5.0 % of the validation" in text
    )
    assert "the app says it of 10.0 % of these images" in text
    without = report.format_row("onnx", "model.onnx", 1000, "square uint8", probs, probs, labels, CLASSES, latency)
    assert "none_of_these_agreement" not in without
    plain = report.deployment("run-1", CLASSES, [without], app, "20 validation images", None, 4)
    assert plain["none_of_these"] is None and "None-of-these" not in report.table(plain)[0]
    assert "None of these" not in report.report_markdown(plain)
