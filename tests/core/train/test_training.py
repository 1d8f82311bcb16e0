"""Training: the split, the reporting callback, stopping, determinism and the saved run folder.

Every training is VGG16 with random weights at 32 px on a few tiny images, head-only unless stated.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import threading

import numpy as np
import pytest
from conftest import COLORS, class_entries, jpeg_bytes, make_zip

from core.config import TrainConfig
from core.data.dataset import load_dataset
from core.model.predict import load_run, predict
from core.train.callbacks import Event
from core.train.pace import known_speed
from core.train.training import train
from core.util.errors import Cancelled, UserError
from core.workspace import runs

FAST = {
    "weights": "none",
    "head": "gap",
    "image_size": 32,
    "unfreeze": 3,
    "batch_size": 4,
    "epochs": 2,
    "optimizer": "adam",
    "learning_rate": 0.01,
    "decay": 0.0,
    "precision": "float32",
}


def fast(**changes) -> TrainConfig:
    return TrainConfig(**{**FAST, **changes})


def split_entries(train_per_class=5, val_per_class=3, test_per_class=0, val_name="val") -> dict[str, bytes]:
    entries = {}
    for k, cls in enumerate(("blue", "red")):
        for split, n in (("train", train_per_class), (val_name, val_per_class), ("test", test_per_class)):
            for i in range(n):
                seed = 1000 * k + 100 * len(split) + i
                entries[f"data/{split}/{cls}/{split}_{i}.jpg"] = jpeg_bytes(COLORS[cls], (36, 28), seed=seed)
    return entries


class Recorder:
    def __init__(self, stop: threading.Event | None = None, stop_at_batch: int | None = None):
        self.events: list[Event] = []
        self.stop, self.stop_at_batch = stop, stop_at_batch

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)
        if self.stop is not None and ev.kind == "batch" and len(self.of("batch")) == self.stop_at_batch:
            self.stop.set()

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("colours")
    return load_dataset(make_zip(base / "colours.zip", class_entries(per_class=8)), base / "work")


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """One two-epoch training on a dataset with its own train/val folders, with every event recorded."""
    base = tmp_path_factory.mktemp("split")
    ds = load_dataset(make_zip(base / "split.zip", split_entries()), base / "work")
    config = fast(epochs=2, batch_size=4)
    recorder = Recorder()
    result = train(ds, config, base / "run", listener=recorder)
    return ds, config, recorder, result


# ---------------------------------------------------------------------------------------------- a whole run


def test_run_uses_the_datasets_own_split(split_run):
    ds, _, _, result = split_run
    split = json.loads((result.run_dir / "split.json").read_text())
    assert sorted(split["val"]) == sorted(it.path for it in ds.items if it.split == "val")
    assert sorted(split["train"]) == sorted(it.path for it in ds.items if it.split == "train")
    assert all("/val/" in p for p in split["val"]) and len(split["val"]) == 6
    assert result.metrics["train_images"] == 10 and result.metrics["val_images"] == 6


def test_run_folder_holds_the_model_and_its_description(split_run):
    ds, config, _, result = split_run
    d = result.run_dir
    assert result.status == "completed"
    assert runs.check_run(d) == d
    marker = json.loads((d / runs.MARKER).read_text())
    assert marker["format"] == runs.RUN_FORMAT and marker["status"] == "completed"
    assert marker["epochs_completed"] == 2 and marker["head"] == "gap" and marker["weights"] == "none"
    assert (d / "model.keras").stat().st_size > 1000
    assert json.loads((d / "classes.json").read_text()) == ds.classes == ["blue", "red"]
    assert TrainConfig.from_dict(json.loads((d / "config.json").read_text())) == config
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2 and 0 <= metrics["val_accuracy"] <= 1
    assert metrics["trainable"] + metrics["frozen"] > 14_000_000
    assert metrics["precision"] == "float32"
    with (d / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(rows[0])
    assert not list(d.glob("*.tmp"))


def test_result_history_has_one_finite_row_per_epoch(split_run):
    _, _, _, result = split_run
    assert len(result.history) == 2
    for row in result.history:
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(row)
        assert all(math.isfinite(v) for v in row.values())
    assert result.metrics["train_loss"] == result.history[-1]["loss"]


def test_preparation_events_announce_the_path_and_count_every_image(split_run):
    _, _, recorder, _ = split_run
    # First the images are read once for the duplicate check (core.data.duplicates), then the plan is announced.
    first = next(i for i, e in enumerate(recorder.events) if e.kind == "plan")
    hashing = recorder.events[:first]
    assert all(e.stage == "reading" for e in hashing) and (not hashing or hashing[-1].done == hashing[-1].total)
    plan = recorder.events[first]
    assert "Fast path" in plan.message  # gap head, convolutions frozen: cached features
    reading = [e for e in recorder.events if e.stage == "features" and e.kind == "progress"]
    assert reading and all(e.total == 16 for e in reading)
    done = [e.done for e in reading]
    assert done == sorted(done) and done[-1] == 16
    assert all(e.eta is not None and e.eta >= 0 for e in reading)
    assert reading[-1].eta == 0
    first_training = next(i for i, e in enumerate(recorder.events) if e.stage == "training")
    assert all(e.stage == "features" for e in recorder.events[first:first_training])


def test_batch_and_epoch_events_carry_sensible_counts(split_run):
    _, config, recorder, _ = split_run
    batches = math.ceil(10 / config.batch_size)  # 10 training images
    total = config.epochs * batches
    batch_events, epoch_events = recorder.of("batch"), recorder.of("epoch")
    assert len(batch_events) == total and len(epoch_events) == config.epochs
    for n, e in enumerate(batch_events, start=1):
        assert e.stage == "training"
        assert (e.epochs, e.batches, e.total, e.done) == (config.epochs, batches, total, n)
        assert e.epoch == (n - 1) // batches + 1 and e.batch == (n - 1) % batches + 1
        assert e.eta is not None and e.eta >= 0 and e.elapsed >= 0
        assert math.isfinite(e.logs["loss"])
    assert batch_events[-1].eta == 0
    for k, e in enumerate(epoch_events, start=1):
        assert (e.epoch, e.batch, e.done) == (k, batches, k * batches)
        assert {"loss", "val_loss", "val_accuracy"} <= set(e.logs)
    elapsed = [e.elapsed for e in recorder.events if e.stage == "training"]
    assert elapsed == sorted(elapsed)
    # Each epoch's summary comes after its last batch.
    kinds = [(e.kind, e.epoch) for e in recorder.events if e.stage == "training"]
    assert kinds.index(("epoch", 1)) == batches


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_history(colour_dataset, tmp_path):
    config = fast(unfreeze=5, epochs=2, seed=11)  # block5_conv3 trains too
    a = train(colour_dataset, config, tmp_path / "a")
    b = train(colour_dataset, config, tmp_path / "b")
    c = train(colour_dataset, fast(unfreeze=5, epochs=2, seed=12), tmp_path / "c")
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([r[key] for r in a.history], [r[key] for r in b.history], rtol=0, atol=1e-6)
    assert (a.run_dir / "split.json").read_text() == (b.run_dir / "split.json").read_text()
    assert [r["loss"] for r in a.history] != [r["loss"] for r in c.history]


# ---------------------------------------------------------------------------------------------- stopping


def test_stop_ends_the_run_within_one_batch_and_saves_it(colour_dataset, tmp_path):
    stop = threading.Event()
    recorder = Recorder(stop, stop_at_batch=1)
    config = fast(batch_size=2, epochs=3)  # 7 batches per epoch
    result = train(colour_dataset, config, tmp_path / "run", listener=recorder, stop=stop)
    assert result.status == "stopped"
    assert len(recorder.of("batch")) == 1
    assert recorder.of("epoch") == []
    marker = json.loads((result.run_dir / runs.MARKER).read_text())
    assert marker["status"] == "stopped" and marker["epochs_completed"] == 0  # the partial epoch does not count
    assert (result.run_dir / "model.keras").is_file()
    assert runs.check_run(result.run_dir) == result.run_dir
    assert math.isfinite(result.metrics["val_loss"])


def test_a_stop_during_epoch_two_keeps_only_the_whole_first_epoch(colour_dataset, tmp_path):
    """Epoch 2's loss over a few batches and its validation over a few images are recorded nowhere."""
    stop = threading.Event()
    events = []

    def listener(ev):
        events.append(ev)
        if ev.kind == "batch" and ev.epoch == 2:
            stop.set()  # the first batch of epoch 2: its validation is cut short too

    config = fast(batch_size=2, epochs=3, validation_split=0.4)  # 10 training images in 5 batches, 6 to validate
    result = train(colour_dataset, config, tmp_path / "run", listener=listener, stop=stop)
    assert result.status == "stopped"
    assert [e.epoch for e in events if e.kind == "epoch"] == [1]
    with (result.run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0"]
    assert len(result.history) == 1
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1
    assert json.loads((result.run_dir / runs.MARKER).read_text())["epochs_completed"] == 1
    assert metrics["train_loss"] == pytest.approx(float(rows[0]["loss"]))
    assert metrics["train_accuracy"] == pytest.approx(float(rows[0]["accuracy"]))

    # The validation score is the saved model's, over the whole validation split.
    run = load_run(result.run_dir)
    split = json.loads((result.run_dir / "split.json").read_text())
    assert len(split["val"]) == metrics["val_images"] == 6
    truth = [colour_dataset.classes[it.label] for p in split["val"] for it in colour_dataset.items if it.path == p]
    predicted = [p.top[0][0] for p in predict(run, [colour_dataset.root / p for p in split["val"]], top_k=1)]
    accuracy = sum(a == b for a, b in zip(truth, predicted, strict=True)) / len(truth)
    assert metrics["val_accuracy"] == pytest.approx(accuracy)


def test_early_stopping_stops_when_validation_loss_stops_improving(colour_dataset, tmp_path, monkeypatch):
    # A learning rate of 0 cannot move the weights: the validation loss stays put, so patience 1 ends the run
    # after the second epoch. The options refuse a rate that small, so it is set after they are checked.
    import core.train.training

    compile_model = core.train.training.compile_model
    monkeypatch.setattr(
        core.train.training,
        "compile_model",
        lambda model, cfg: compile_model(model, dataclasses.replace(cfg, learning_rate=0.0)),
    )
    config = fast(optimizer="sgd", momentum=0.0, epochs=5, early_stopping=1)
    result = train(colour_dataset, config, tmp_path / "run")
    assert result.status == "completed"
    assert result.metrics["epochs_completed"] == 2 < config.epochs
    assert len(result.history) == 2
    assert result.history[0]["val_loss"] == result.history[1]["val_loss"]


def test_early_stopping_keeps_the_best_weights(colour_dataset, tmp_path):
    config = fast(optimizer="adam", learning_rate=0.05, epochs=4, early_stopping=2, seed=3)
    result = train(colour_dataset, config, tmp_path / "run")
    assert len(result.history) <= config.epochs
    best = min(r["val_loss"] for r in result.history)
    assert result.metrics["val_loss"] == pytest.approx(best, abs=1e-5)


# ---------------------------------------------------------------------------------------------- failures


def test_failed_training_leaves_no_run_folder(colour_dataset, tmp_path, isolated_dirs):
    bad = fast(weights=str(tmp_path / "missing.h5"))
    with pytest.raises(UserError, match="does not exist"):
        train(colour_dataset, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError):
        train(colour_dataset, bad)  # a new folder under the runs folder, removed again
    parent = runs.runs_dir()
    assert parent == isolated_dirs / "runs"
    assert not parent.exists() or list(parent.iterdir()) == []


def test_invalid_options_fail_before_any_folder_is_made(colour_dataset, tmp_path):
    with pytest.raises(UserError, match="--epochs"):
        train(colour_dataset, fast(epochs=0), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_training_refuses_to_overwrite_a_non_empty_folder(colour_dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        train(colour_dataset, fast(), out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_new_run_folder_is_named_after_the_dataset(colour_dataset, isolated_dirs):
    result = train(colour_dataset, fast(epochs=1))
    assert result.run_dir.parent == isolated_dirs / "runs"
    assert "colours" in result.run_dir.name
    assert [r["id"] for r in runs.list_runs()] == [result.run_dir.name]


def test_stop_before_training_starts_cancels_and_saves_nothing(colour_dataset, tmp_path):
    stop = threading.Event()

    def listener(ev):
        if ev.stage == "features" and ev.kind == "progress":
            stop.set()  # the user presses Stop while the frozen layers are still running

    with pytest.raises(Cancelled):
        train(colour_dataset, fast(), tmp_path / "run", listener=listener, stop=stop)
    assert not (tmp_path / "run").exists()


def test_second_training_with_another_optimizer_reuses_the_cached_features(colour_dataset, tmp_path):
    first = train(colour_dataset, fast(epochs=1), tmp_path / "a")
    second = train(colour_dataset, fast(epochs=1, optimizer="sgd", learning_rate=0.01), tmp_path / "b")
    assert first.metrics["path"] == "cached features"
    assert first.metrics["cache_misses"] == len(colour_dataset.items)
    # The first run's feature pass timed this server for the time estimates (core.train.pace).
    assert known_speed(32, "float32") == pytest.approx(first.metrics["feature_images_per_second"], abs=0.01)
    assert second.metrics["cache_hits"] == len(colour_dataset.items) and second.metrics["cache_misses"] == 0


def test_nothing_frozen_trains_end_to_end_and_says_why(colour_dataset, tmp_path):
    result = train(colour_dataset, fast(epochs=1, unfreeze=1000), tmp_path / "run")
    assert result.metrics["path"] == "end to end"
    assert "no layer" in result.metrics["path_reason"]
