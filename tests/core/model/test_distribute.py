"""Devices: the default strategy on one device, MirroredStrategy over several, and what a mirrored run saves.

Two logical CPU devices stand in for two GPUs. They must be configured before TensorFlow initialises its devices,
which this test process has long done, so mirrored trainings run in a fresh Python process each.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import COLORS, ROOT, jpeg_bytes, make_zip, tiny_config

from core.data.dataset import load_dataset
from core.model import distribute
from core.model.inputs import load_named
from core.model.predict import load_run
from core.train.training import train
from core.util.errors import UserError

# Trains one run in a process of its own with two logical CPU devices: argv = zip, run folder, config (JSON) and
# optionally --without-dropout. Prints the run's status and plan messages as JSON on its last line.
TRAIN_ON_TWO_CPUS = """
import json, os, sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras

# Dropout draws its masks per replica under a MirroredStrategy, so a mirrored run and a one-device run drop
# different units; without it, the two runs differ only by how the work is distributed.
if sys.argv[4:] == ["--without-dropout"]:
    keras.layers.Dropout.call = lambda self, inputs, training=False: inputs

from core.config import TrainConfig
from core.data.dataset import load_dataset
from core.train.training import train

plans = []
dataset = load_dataset(sys.argv[1], os.environ["CLASSIFIER_WORK_DIR"])
config = TrainConfig.from_dict(json.loads(sys.argv[3]))
result = train(dataset, config, sys.argv[2], listener=lambda ev: ev.kind == "plan" and plans.append(ev.message))
print(json.dumps({"status": result.status, "plans": plans}))
"""


def split_zip(path: Path, train: tuple[int, int] = (4, 4), val: tuple[int, int] = (2, 1)) -> Path:
    """A zip with its own train/ and val/ folders (blue, red counts), so the split's sizes are exactly as given."""
    entries = {}
    for k, cls in enumerate(("blue", "red")):
        for split, counts in (("train", train), ("val", val)):
            for i in range(counts[k]):
                seed = 100 * k + 10 * len(split) + i
                entries[f"{split}/{cls}/{i}.jpg"] = jpeg_bytes(COLORS[cls], (36, 28), seed=seed)
    return make_zip(path, entries)


def train_in_process(base: Path, zip_path: Path, config, devices: str | None, dropout: bool = True) -> dict:
    """Train in a fresh process with two logical CPUs, mirrored over ``devices`` or (None) on the default strategy.

    Every run has folders of its own: with a shared feature cache the second run would skip the feature pass.
    """
    base.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KERAS_HOME": str(base / "keras"),
        "CLASSIFIER_CACHE_DIR": str(base / "cache"),
        "CLASSIFIER_WORK_DIR": str(base / "work"),
        "CLASSIFIER_RUNS_DIR": str(base / "runs"),
    }
    env.pop("CLASSIFIER_DEVICES", None)
    if devices:
        env["CLASSIFIER_DEVICES"] = devices
    script = base / "train_on_two_cpus.py"
    script.write_text(TRAIN_ON_TWO_CPUS)
    args = [str(zip_path), str(base / "run"), json.dumps(config.to_dict())] + ([] if dropout else ["--without-dropout"])
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "run": base / "run"}


@pytest.fixture(scope="module")
def mirrored_and_single(tmp_path_factory):
    """The same tiny run (same seed, 8 training images in batches of 4, 3 validation images, no dropout) mirrored
    over two CPUs, and on one. The first batch of the 3 validation images splits evenly only in batches of 2."""
    base = tmp_path_factory.mktemp("distribute")
    zip_path = split_zip(base / "colours.zip")
    config = tiny_config(epochs=2, batch_size=4, optimizer="sgd", learning_rate=0.05, seed=5)
    mirrored = train_in_process(base / "mirrored", zip_path, config, "/cpu:0,/cpu:1", dropout=False)
    single = train_in_process(base / "single", zip_path, config, None, dropout=False)
    return mirrored, single, zip_path


def epoch_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "history.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_mirrored_run_trains_on_both_devices_and_says_so(mirrored_and_single):
    mirrored, single, _ = mirrored_and_single
    metrics = json.loads((mirrored["run"] / "metrics.json").read_text())
    assert mirrored["status"] == "completed"
    assert metrics["distribution"] == {"strategy": "MirroredStrategy", "replicas": 2, "devices": ["CPU:0", "CPU:1"]}
    assert metrics["path"] == "cached features"  # the feature pass ran mirrored too
    assert "Training on 2 devices (CPU:0, CPU:1) with MirroredStrategy" in mirrored["plans"][0]
    # One device: the run says and records nothing about devices.
    assert "distribution" not in json.loads((single["run"] / "metrics.json").read_text())
    assert "Training on" not in single["plans"][0]


def test_mirrored_model_loads_without_a_strategy_and_predicts_like_a_one_device_one(mirrored_and_single, tmp_path):
    """Both models are loaded here, in a process with one CPU device and no strategy, and predict the same images.

    With the same seed, the same split and batches of 4 (2 images per replica), a mirrored step applies the same
    averaged gradient as a one-device step, so the weights agree to float rounding (the replicas' parts are added
    in another order). SGD, unlike Adam, follows the gradient's scale: a loss not divided by the replica count,
    or a batch size taken per replica, would change every step, and the training moves the loss far more than the
    tolerance, so such a mistake could not pass unseen.
    """
    mirrored, single, zip_path = mirrored_and_single
    dataset = load_dataset(zip_path, tmp_path / "work")
    images = np.stack([load_named(path, 32, "crop") for path in dataset.paths()])
    p_mirrored = load_run(mirrored["run"]).probabilities(images)
    p_single = load_run(single["run"]).probabilities(images)
    assert p_mirrored.shape == (len(images), 2)
    np.testing.assert_allclose(p_mirrored, p_single, atol=1e-4)
    loss_mirrored, loss_single = epoch_losses(mirrored["run"]), epoch_losses(single["run"])
    np.testing.assert_allclose(loss_mirrored, loss_single, atol=1e-4)
    assert abs(loss_single[-1] - loss_single[0]) > 1e-2
    val_mirrored, val_single = (json.loads((r["run"] / "metrics.json").read_text()) for r in (mirrored, single))
    assert val_mirrored["val_loss"] == pytest.approx(val_single["val_loss"], abs=1e-4)


def test_mirrored_run_in_bfloat16_with_dropout_and_an_uneven_last_batch(tmp_path):
    """The app's own model as it trains: dropout on, mixed bfloat16, and 9 images in batches of 4 (the last image
    alone on one device, none on the other)."""
    zip_path = split_zip(tmp_path / "colours.zip", train=(5, 4), val=(2, 2))
    config = tiny_config(epochs=1, batch_size=4, precision="bfloat16", seed=5)
    run = train_in_process(tmp_path / "mirrored", zip_path, config, "/cpu:0,/cpu:1")
    metrics = json.loads((run["run"] / "metrics.json").read_text())
    assert metrics["distribution"]["replicas"] == 2
    assert metrics["precision"] == "bfloat16"
    assert np.isfinite([metrics["val_loss"], *epoch_losses(run["run"])]).all()
    saved = keras.saving.load_model(run["run"] / "model.keras", compile=False, safe_mode=True)
    assert saved.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"  # saved as it trained
    assert saved.get_layer("predictions").dtype_policy.name == "float32"
    loaded = load_run(run["run"])  # answers in float32, as every export does
    assert all(layer.dtype_policy.name == "float32" for layer in loaded.model.layers)
    for a, b in zip(saved.weights, loaded.model.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    images = np.stack([load_named(path, 32, "crop") for path in load_dataset(zip_path, tmp_path / "work").paths()])
    probabilities = loaded.probabilities(images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- choosing devices


def test_without_gpus_or_devices_named_training_stays_on_the_default_strategy(monkeypatch):
    import tensorflow as tf

    if len(tf.config.list_logical_devices("GPU")) > 1:
        pytest.skip("this machine has several GPUs")
    monkeypatch.delenv("CLASSIFIER_DEVICES", raising=False)
    strategy = distribute.strategy()
    assert strategy is tf.distribute.get_strategy()
    assert not tf.distribute.has_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert distribute.describe(strategy) == ""
    assert distribute.for_training(4, 8, 3) == distribute.Placement(strategy, "")
    assert distribute.evaluation_batch(strategy, 4, 3) == 4


def test_one_named_device_runs_everything_there(monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("CLASSIFIER_DEVICES", " /cpu:0 ")
    strategy = distribute.strategy()
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert distribute.describe(strategy) == "Training on CPU:0 (OneDeviceStrategy)."


@pytest.mark.parametrize("devices", ["/gpu:7", "/cpu:0,/cpu:0", "bogus"])
def test_devices_this_machine_lacks_are_refused_before_any_folder_is_made(devices, monkeypatch, tmp_path):
    monkeypatch.setenv("CLASSIFIER_DEVICES", devices)
    dataset = load_dataset(split_zip(tmp_path / "colours.zip"), tmp_path / "work")
    with pytest.raises(UserError, match="CLASSIFIER_DEVICES"):
        train(dataset, tiny_config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


class TwoReplicas:
    """Stands in for a MirroredStrategy over two GPUs where only its shape matters."""

    num_replicas_in_sync = 2
    extended = type("Extended", (), {"worker_devices": ("/device:GPU:0", "/device:GPU:1")})()


@pytest.mark.parametrize(
    "batch_size, n_train, n_val, why",
    [
        (5, 20, 6, "a batch of 5 images does not split evenly between 2 devices (a batch size that is a multiple"),
        (16, 7, 6, "the 7 training images (fewer than one batch) do not split evenly between 2 devices."),
        (16, 20, 1, "1 validation image cannot be split between 2 devices."),
    ],
)
def test_a_first_batch_keras_cannot_split_evenly_trains_on_one_device(monkeypatch, batch_size, n_train, n_val, why):
    import tensorflow as tf

    monkeypatch.setattr(distribute, "strategy", TwoReplicas)
    placement = distribute.for_training(batch_size, n_train, n_val)
    assert placement.strategy is tf.distribute.get_strategy()
    assert placement.message.startswith(f"Training on one device: {why}")


def test_batches_that_split_evenly_train_on_both_devices(monkeypatch):
    monkeypatch.setattr(distribute, "strategy", TwoReplicas)
    for batch_size, n_train in ((4, 9), (16, 6)):  # an uneven last batch is fine: only the first one must split
        placement = distribute.for_training(batch_size, n_train, 3)
        assert isinstance(placement.strategy, TwoReplicas)
        assert (
            placement.message == "Training on 2 GPUs (GPU:0, GPU:1) with TwoReplicas: each batch is split between them."
        )


def test_the_scoring_batch_splits_evenly_on_every_device():
    assert [distribute.evaluation_batch(TwoReplicas(), 16, n) for n in (2, 3, 7, 16, 40)] == [2, 2, 6, 16, 16]
    assert distribute.evaluation_batch(TwoReplicas(), 5, 40) == 4
