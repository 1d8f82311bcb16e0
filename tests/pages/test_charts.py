"""The charts the pages draw: data in, Vega-Lite out."""

from __future__ import annotations

import re
from pathlib import Path

from ui import charts

ROWS = [{"epoch": 1, "loss": 0.9, "val_loss": 0.95, "accuracy": 0.5, "val_accuracy": 0.55},
        {"epoch": 2, "loss": 0.85, "val_loss": 0.9, "accuracy": 0.6, "val_accuracy": 0.58}]  # fmt: skip


def encoding(chart) -> dict:
    spec = chart.to_dict()
    layer = spec["layer"][0] if "layer" in spec else spec
    return layer["encoding"]


def test_train_and_validation_get_two_distinct_hues():
    colour = encoding(charts.epoch_curves(ROWS, "loss", "Loss"))["color"]
    assert colour["scale"]["domain"] == ["train", "validation"]
    first, second = colour["scale"]["range"]
    assert first != second
    # Not two shades of one hue: the red, green and blue parts differ in order.
    rgb = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (first, second)]
    assert sorted(range(3), key=lambda i: rgb[0][i]) != sorted(range(3), key=lambda i: rgb[1][i])


def test_loss_axes_follow_the_data_and_accuracy_keeps_zero():
    assert encoding(charts.epoch_curves(ROWS, "loss", "Loss"))["y"]["scale"]["zero"] is False
    assert encoding(charts.epoch_curves(ROWS, "accuracy", "Accuracy"))["y"]["scale"]["zero"] is True
    batches = [{"step": i, "epoch": 1, "loss": 0.8 + i / 100} for i in range(5)]
    assert encoding(charts.batch_loss(batches))["y"]["scale"]["zero"] is False


def test_the_pages_say_words_not_word_s():
    root = Path(__file__).resolve().parents[2]
    for path in [*root.glob("pages/*.py"), *root.glob("ui/*.py")]:
        assert not re.search(r"\w\(s\)", path.read_text()), f"{path.name} writes 'thing(s)'"
