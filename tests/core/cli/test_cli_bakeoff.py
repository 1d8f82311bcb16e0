"""``python -m core bakeoff``: the table and the recommendation on stdout, progress on stderr, the whole result as
JSON, a saved dataset's id as well as a zip, and a mistyped backbone as one line with exit status 2."""

from __future__ import annotations

import json

import pytest
from conftest import assert_user_error, class_entries, make_zip, run_cli

TWO = "mobilenet_v3_small,vgg16"


@pytest.fixture
def data_zip(tmp_path):
    return make_zip(tmp_path / "colours.zip", class_entries(classes=("red", "blue"), per_class=8))


def test_bakeoff_prints_a_row_per_backbone_and_a_recommendation_with_progress_on_stderr(tmp_path, data_zip):
    proc = run_cli("bakeoff", data_zip, "--backbones", TWO, "--weights", "none", "--image-size", 32, env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().split("\n")
    assert lines[0].split() == ["backbone", "val", "accuracy", "size", "MB", "params", "latency", "ms", "note"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"mobilenet_v3_small", "vgg16"}
    assert rows["vgg16"][3] == "14,715,714"  # VGG16's convolutions and a 2-way gap head, in float32
    assert float(rows["vgg16"][2]) == pytest.approx(14_715_714 * 4 / 1e6, abs=0.05)
    assert rows["vgg16"][1].endswith("%") and float(rows["vgg16"][4]) > 0
    assert "completed: 14 training and 2 validation images of colours.zip, 32 px, random weights" in proc.stdout
    assert lines[-1].startswith("recommended: ")
    assert "backbone 1 of 2 (mobilenet_v3_small) · features…" in proc.stderr
    assert "backbone 2 of 2 (vgg16) · timing one image…" in proc.stderr
    assert "recommended" not in proc.stderr


@pytest.mark.parametrize(
    ("backbones", "needle"),
    [
        ("mobilenet_v3_small,alexnet", "There is no backbone 'alexnet'; choose one of vgg16, mobilenet_v3_small"),
        (",", "--backbones names none; choose from vgg16"),
    ],
)
def test_an_unknown_backbone_is_one_line_and_exit_2(tmp_path, data_zip, backbones, needle):
    assert_user_error(run_cli("bakeoff", data_zip, "--backbones", backbones, env_dir=tmp_path), needle)


def test_bakeoff_takes_a_saved_dataset_id_and_prints_json(tmp_path, data_zip, capsys):
    from core.cli.main import main
    from core.workspace.datasets import save_zip

    saved = save_zip(data_zip)
    args = ["bakeoff", saved.id, "--backbones", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
    assert main([*args, "--json"]) == 0  # in this process: TensorFlow is loaded once
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "completed" and result["asked"] == ["mobilenet_v3_small"]
    [row] = result["rows"]
    assert row["backbone"] == "mobilenet_v3_small" and 0 <= row["val_accuracy"] <= 1 and row["latency_ms"] > 0
    assert result["recommendation"]["backbone"] == "mobilenet_v3_small"
