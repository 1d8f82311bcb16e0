"""The backbone bake-off: small backbones with random weights at 32 px on a tiny dataset made here give one row
each, read their features back from the cache the second time, stop with the rows done, give an offline backbone
its sentence; the recommendation rule on rows made by hand."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import class_entries, make_zip, tiny_config

from core.publish import bakeoff as bake
from core.publish.bakeoff import RULE, Bakeoff, bakeoff, recommend, sort_rows
from core.util.errors import UserError

SMALL = ["mobilenet_v3_small", "resnet50", "vgg16"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from core.data.dataset import load_dataset

    base = tmp_path_factory.mktemp("bakeoff")
    zip_path = make_zip(base / "colours.zip", class_entries(classes=("red", "blue"), per_class=10))
    return load_dataset(zip_path, base / "work")


def base_config(**changes):
    return tiny_config(validation_split=0.2, **changes)


def test_each_backbone_gets_a_measured_row_and_a_second_bakeoff_reads_the_cached_features(dataset):
    stages: list[tuple[str, int, int]] = []
    result = bakeoff(dataset, SMALL, base_config(), progress=lambda s, d, t: stages.append((s, d, t)))
    assert result.status == "completed" and not result.stopped
    assert sorted(r["backbone"] for r in result.rows) == sorted(SMALL)
    assert result.train_images == 16 and result.val_images == 4
    for row in result.rows:
        assert row["error"] is None, row
        assert 0.0 <= row["val_accuracy"] <= 1.0
        assert row["size_mb"] > 0 and row["params"] > 0 and row["latency_ms"] > 0
        assert row["size_mb"] == pytest.approx(row["params"] * 4 / 1e6, rel=1e-3)
        assert 1 <= row["epochs"] <= bake.EPOCHS
        assert row["cache_misses"] == 20 and row["cache_hits"] == 0
    assert result.rows == sort_rows(result.rows)
    sizes = {r["backbone"]: r["size_mb"] for r in result.rows}
    assert sizes["mobilenet_v3_small"] < sizes["vgg16"] < sizes["resnet50"]
    rec = result.recommendation
    assert rec["backbone"] in SMALL and rec["rule"] == RULE and rec["backbone"] in rec["text"]
    # progress names the backbone's place and counts the images of the feature pass
    assert ("backbone 2 of 3 (resnet50) · features", 20, 20) in stages
    assert any(s.startswith("backbone 3 of 3 (vgg16) · training the head") for s, _, _ in stages)
    # the result is the job's JSON, and reads back
    data = json.loads(json.dumps(result.to_dict()))
    assert data["format"] == bake.FORMAT and Bakeoff.from_dict(data) == result

    again = bakeoff(dataset, ["mobilenet_v3_small", "vgg16"], base_config())
    for row in again.rows:
        assert row["cache_hits"] == 20 and row["cache_misses"] == 0, row


@pytest.mark.parametrize("where", ["between", "inside"])
def test_a_stop_ends_with_the_rows_done_marked_stopped(dataset, where):
    stop = threading.Event()

    def progress(stage, done, total):
        if where == "inside" and stage.startswith("backbone 2 of 2") and "features" in stage:
            stop.set()  # in the second backbone's feature pass: it ends within one batch

    result = bakeoff(dataset, ["mobilenet_v3_small", "vgg16"], base_config(), progress=progress, stop=stop,
                     on_row=lambda row: stop.set() if where == "between" else None)  # fmt: skip
    assert result.status == "stopped" and result.stopped
    assert [r["backbone"] for r in result.rows] == ["mobilenet_v3_small"]
    assert result.rows[0]["val_accuracy"] is not None
    assert result.recommendation["text"].startswith("Of the backbones done before the stop: mobilenet_v3_small")


def test_a_backbone_whose_imagenet_weights_cannot_be_downloaded_is_a_row_with_the_sentence(dataset, monkeypatch):
    import core.model.vgg16

    monkeypatch.setattr(core.model.vgg16, "reachable", lambda *args, **kwargs: False)
    result = bakeoff(dataset, ["mobilenet_v3_small", "vgg16"], base_config(weights="imagenet"))
    assert result.status == "completed"
    errors = {r["backbone"]: r["error"] for r in result.rows}
    assert errors == {
        "mobilenet_v3_small": "The ImageNet weights for MobileNetV3 Small could not be downloaded: this server has no "
        "connection to storage.googleapis.com.",
        "vgg16": "The ImageNet weights for VGG16 could not be downloaded: this server has no connection to "
        "storage.googleapis.com.",
    }
    assert all(r["val_accuracy"] is None for r in result.rows)
    assert result.recommendation is None


def test_the_int8_file_of_each_backbone_is_scored_on_the_validation_images(dataset):
    result = bakeoff(dataset, ["mobilenet_v3_small"], base_config(), int8=True)
    [row] = result.rows
    assert row["int8_error"] is None, row["int8_error"]
    assert 0.0 <= row["int8_accuracy"] <= 1.0
    assert 0 < row["int8_size_mb"] < row["size_mb"]


@pytest.mark.parametrize(
    ("names", "config", "needle"),
    [
        (["mobilenet_v3_small", "alexnet"], base_config(), "There is no backbone 'alexnet'; choose one of vgg16"),
        (["vgg16"], base_config(weights="/tmp/vgg16.h5"), "a weights file fits one backbone only"),
        (["vgg16"], base_config(image_size=8), "--image-size must be between 32 and 512"),
    ],
)
def test_a_wrong_option_is_a_sentence_before_any_work(dataset, names, config, needle):
    with pytest.raises(UserError, match=needle):
        bakeoff(dataset, names, config)


# ---------------------------------------------------------------------------------------------- the rule


def row(name, accuracy, size, latency, **more):
    return {**bake.empty_row(name), "val_accuracy": accuracy, "size_mb": size, "latency_ms": latency, **more}


def test_the_smallest_within_one_point_of_the_best_is_recommended_with_its_costs():
    rows = [row("vgg16", 0.900, 58.9, 37.0), row("mobilenet_v3_large", 0.892, 2.4, 4.1),
            row("mobilenet_v3_small", 0.850, 1.0, 2.0), row("resnet50", 0.895, 94.0, 40.0)]  # fmt: skip
    rec = recommend(rows)
    assert rec["backbone"] == "mobilenet_v3_large"
    assert rec["text"].startswith("mobilenet_v3_large is 0.8 points below vgg16 at 1/25 of the size and 9× faster")
    assert "89.2% against 90.0%; 2.4 MB against 58.9 MB, 4.1 ms against 37.0 ms an image" in rec["text"]


def test_the_most_accurate_is_recommended_when_nothing_smaller_comes_within_one_point():
    rows = [row("vgg16", 0.945, 58.9, 37.0), row("mobilenet_v3_small", 0.9, 3.9, 2.0), row("resnet50", 0.96, 94, 40)]
    rec = recommend(rows)
    assert rec["backbone"] == "resnet50"
    assert rec["text"] == ("resnet50 is the most accurate (96.0%) and nothing smaller comes within 1 point: the "
                           "closest, vgg16, is 1.5 points below at 63% of the size.")  # fmt: skip
    rows[0]["val_accuracy"] = 0.95  # exactly 1 point below: within
    assert recommend(rows)["backbone"] == "vgg16"
    assert recommend([row("vgg16", 0.95, 58.9, 37.0), row("resnet50", 0.9, 94, 40)])["text"] == (
        "vgg16 is the most accurate (95.0%) and the smallest too (58.9 MB)."
    )


def test_equal_accuracy_goes_to_the_smaller_and_rows_without_a_result_go_last():
    rows = [row("resnet50", 0.9, 94, 40), row("convnext_tiny", None, None, None, error="no weights"),
            row("efficientnet_v2_b0", 0.9, 23.0, 20.0)]  # fmt: skip
    assert [r["backbone"] for r in sort_rows(rows)] == ["efficientnet_v2_b0", "resnet50", "convnext_tiny"]
    assert recommend(rows)["backbone"] == "efficientnet_v2_b0"
    assert recommend([rows[1]]) is None and recommend([]) is None
    assert recommend([rows[0], rows[1]])["text"] == "resnet50 is the only backbone with a result (90.0%)."


def test_a_slower_smaller_pick_says_so_and_a_small_validation_set_and_an_int8_loss_are_named():
    rows = [row("vgg16", 0.90, 58.9, 10.0), row("efficientnet_v2_b0", 0.90 - 0.005, 23.0, 13.0, int8_accuracy=0.80)]
    rec = recommend(rows, val_images=20)
    assert rec["backbone"] == "efficientnet_v2_b0"
    assert "0.5 points below vgg16 at 39% of the size and 1.3× slower" in rec["text"]
    assert "Its int8 LiteRT file loses 9.5 points (80.0%)." in rec["text"]
    assert rec["text"].endswith("With 20 validation images one image is 5.0 points, so differences of a few points "
                                "may be chance.")  # fmt: skip
    assert "validation images one image" not in recommend(rows, val_images=400)["text"]
