"""Two-phase fine-tuning: the head alone first, then the last K layers at a lower learning rate, on one time axis."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
from conftest import class_entries, make_zip, tiny_config

from core.config import HEAD_LAYERS, HEADS, TrainConfig, min_fine_tune_unfreeze
from core.data.dataset import load_dataset
from core.model.build import build_model
from core.train.phases import phases
from core.train.training import train
from core.util.errors import UserError


@pytest.mark.parametrize("head", HEADS)
def test_head_layer_counts_match_the_built_models(head):
    """HEAD_LAYERS counts the layers each head adds after VGG16's own (vgg-fc keeps fc1 and fc2)."""
    size = 224 if head == "vgg-fc" else 32
    model = build_model(TrainConfig(weights="none", head=head, image_size=size, precision="float32"), 3)
    top = head == "vgg-fc"
    vgg = {layer.name for layer in keras.applications.VGG16(weights=None, include_top=top).layers} - {"predictions"}
    names = [layer.name for layer in model.layers]
    last_vgg = max(i for i, name in enumerate(names) if name in vgg)
    assert len(names) - 1 - last_vgg == HEAD_LAYERS[head]
    # The smallest phase-2 unfreeze reaches exactly one VGG16 layer with weights.
    k = min_fine_tune_unfreeze(head)
    reached = [layer for layer in model.layers[-k:] if layer.name in vgg and layer.weights]
    assert len(reached) == 1


def test_phases_follow_the_recipe():
    one = phases(TrainConfig(epochs=7))
    assert [(p.number, p.unfreeze, p.epochs, p.learning_rate) for p in one] == [(0, 5, 7, 0.01)]
    two = phases(TrainConfig(epochs=3, unfreeze=10, fine_tune_epochs=4, learning_rate=0.01, fine_tune_lr_divisor=50))
    assert [(p.number, p.unfreeze, p.epochs) for p in two] == [(1, HEAD_LAYERS["small-fc"], 3), (2, 10, 4)]
    assert two[1].learning_rate == pytest.approx(0.01 / 50)
    assert TrainConfig(epochs=3, fine_tune_epochs=4).total_epochs == 7


def test_phase_two_must_reach_into_vgg16():
    with pytest.raises(UserError, match="--unfreeze must be at least 8"):
        TrainConfig(fine_tune_epochs=2, unfreeze=7).validate()
    with pytest.raises(UserError, match="--fine-tune-lr-divisor"):
        TrainConfig(fine_tune_epochs=2, unfreeze=10, fine_tune_lr_divisor=0.5).validate()
    TrainConfig(fine_tune_epochs=2, unfreeze=8).validate()
    TrainConfig(fine_tune_epochs=0, unfreeze=1).validate()  # one phase: any K


@pytest.fixture
def colours_zip(tmp_path):
    return make_zip(tmp_path / "c.zip", class_entries(classes=("red", "green", "blue"), per_class=6))


@pytest.fixture
def colours(colours_zip, tmp_path):
    return load_dataset(colours_zip, tmp_path / "work")


def test_two_phase_run_trains_the_head_then_the_last_block_on_one_epoch_axis(colours, tmp_path):
    config = tiny_config(epochs=2, fine_tune_epochs=3, unfreeze=6, fine_tune_lr_divisor=20)  # gap head: 3 layers
    keras.utils.set_random_seed(config.seed)
    before = build_model(config, 3)  # the same seed, so the same initial weights as the run's model
    events = []
    result = train(colours, config, tmp_path / "run", listener=events.append)

    plans = [e for e in events if e.kind == "plan"]
    assert [(e.phase, e.epoch) for e in plans] == [(1, 1), (2, 3)]
    assert plans[0].message.startswith("Phase 1 of 2 (the head alone")
    assert "learning rate 0.0025" in plans[1].message  # 0.05 / 20
    epochs = [(e.epoch, e.phase) for e in events if e.kind == "epoch"]
    assert epochs == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert all(e.epochs == 5 for e in events if e.kind == "epoch")

    m = result.metrics
    assert m["epochs_completed"] == 5 and m["phase2_start_epoch"] == 3
    assert [(p["phase"], p["start_epoch"], p["epochs_completed"], p["unfreeze"]) for p in m["phases"]] == [
        (1, 1, 2, 3),
        (2, 3, 3, 6),
    ]
    assert [r["phase"] for r in result.history] == [1, 1, 2, 2, 2]
    with open(result.run_dir / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2, 3, 4]

    # Phase 2 trained block5_conv2 and _conv3 (within the last 6 layers); nothing earlier ever changed.
    saved = keras.saving.load_model(result.run_dir / "model.keras", safe_mode=True)
    for name, changed in (
        ("block5_conv3", True),
        ("block5_conv2", True),
        ("block5_conv1", False),
        ("block1_conv1", False),
    ):
        same = all(
            np.array_equal(a, b)
            for a, b in zip(before.get_layer(name).get_weights(), saved.get_layer(name).get_weights(), strict=True)
        )
        assert same != changed, name


def test_stop_in_phase_one_skips_phase_two_and_keeps_the_model(colours, tmp_path):
    import threading

    stop = threading.Event()

    def listener(ev):
        if ev.kind == "epoch" and ev.epoch == 1:
            stop.set()

    config = tiny_config(epochs=3, fine_tune_epochs=3, unfreeze=6)
    result = train(colours, config, tmp_path / "run", listener=listener, stop=stop)
    assert result.status == "stopped"
    assert result.metrics["epochs_completed"] == 1
    assert [p["phase"] for p in result.metrics["phases"]] == [1]
    assert "phase2_start_epoch" not in result.metrics
    assert (result.run_dir / "model.keras").is_file()


def test_job_snapshot_carries_the_phase_two_start(colours_zip):
    from core.jobs.registry import JobRegistry
    from core.jobs.states import COMPLETED
    from core.workspace.datasets import open_dataset, save_zip

    saved = open_dataset(save_zip(colours_zip).id)
    reg = JobRegistry(max_running=1, executor="thread")
    job = reg.submit(saved, tiny_config(epochs=1, fine_tune_epochs=1, unfreeze=6))
    snap = reg.wait(job.id, timeout=600)
    reg.close()
    assert snap.state == COMPLETED, snap.error
    assert snap.phase2_start == 2
    assert [row.get("phase") for row in snap.epoch_logs] == [1, 2]
    assert snap.epochs == 2
