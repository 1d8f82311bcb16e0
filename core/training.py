"""Training: split, read images, fit with a reporting callback, save the run.

    result = train(dataset, TrainConfig(weights="none", image_size=64, epochs=2), out_dir="runs/ants",
                   listener=print, stop=threading.Event())

``train`` makes no UI call and can run in a worker thread. It reports to ``listener(Event)``: reading
progress, every batch and every epoch, with counts, elapsed time and an ETA. Setting ``stop`` ends the
run within one batch; the model trained so far is saved and the run is marked ``stopped``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core import runs
from core.config import TrainConfig
from core.dataset import Dataset
from core.images import load_images
from core.model import build_model, compile_model, param_counts, resolve_precision


@dataclass
class Event:
    """A progress report: ``stage`` is "reading" (images) or "training" (batches); ``kind`` says what ended."""

    stage: str
    kind: str  # "progress" (reading), "batch", "epoch"
    done: int  # images read, or batches done over the whole run
    total: int
    elapsed: float
    eta: float | None
    epoch: int = 0  # 1-based
    epochs: int = 0
    batch: int = 0  # 1-based within the epoch
    batches: int = 0
    logs: dict[str, float] = field(default_factory=dict)


Listener = Callable[[Event], None]


@dataclass
class Result:
    run_dir: Path
    status: str  # "completed" or "stopped"
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle each class with ``seed`` and hold out ``fraction`` of it (at least one image, never all)."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    train_idx, val_idx = [], []
    for label in np.unique(labels_arr):
        idx = rng.permutation(np.flatnonzero(labels_arr == label))
        n_val = min(max(1, round(len(idx) * fraction)), len(idx) - 1)
        val_idx += idx[:n_val].tolist()
        train_idx += idx[n_val:].tolist()
    return sorted(train_idx), sorted(val_idx)


def split_dataset(dataset: Dataset, config: TrainConfig) -> tuple[list[int], list[int]]:
    """Indices into ``dataset.items`` for training and validation: the dataset's own split when it has one."""
    items = dataset.items
    if dataset.has_split and any(it.split == "val" for it in items):
        return (
            [i for i, it in enumerate(items) if it.split == "train"],
            [i for i, it in enumerate(items) if it.split == "val"],
        )
    pool = [i for i, it in enumerate(items) if it.split in ("", "train")]
    tr, va = stratified_split([items[i].label for i in pool], config.validation_split, config.seed)
    return [pool[i] for i in tr], [pool[i] for i in va]


class ReportingCallback(keras.callbacks.Callback):
    """Calls ``on_batch``/``on_epoch`` with an Event and asks ``should_stop`` after every batch."""

    def __init__(self, epochs: int, on_event: Listener | None, should_stop: Callable[[], bool]):
        super().__init__()
        self.epochs, self.on_event, self.should_stop = epochs, on_event, should_stop
        self.epoch = 0
        self.batches = 0

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()
        self.batches = self.params.get("steps") or 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _event(self, kind: str, batch: int, logs) -> Event:
        done = self.epoch * self.batches + batch
        total = self.epochs * self.batches
        elapsed = time.monotonic() - self.start
        return Event(
            stage="training",
            kind=kind,
            done=done,
            total=total,
            elapsed=elapsed,
            eta=elapsed / done * (total - done) if done else None,
            epoch=self.epoch + 1,
            epochs=self.epochs,
            batch=batch,
            batches=self.batches,
            logs={k: float(v) for k, v in (logs or {}).items()},
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.on_event:
            self.on_event(self._event("batch", batch + 1, logs))
        if self.should_stop():
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self.should_stop():
            self.model.stop_evaluating = True  # a stop skips the rest of this epoch's validation too

    def on_epoch_end(self, epoch, logs=None):
        if self.on_event and not self.should_stop():
            self.on_event(self._event("epoch", self.batches, logs))


def _reading_reporter(listener: Listener | None, offset: int, grand_total: int) -> Callable[[int, int], None]:
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        if listener:
            elapsed = time.monotonic() - start
            n = offset + done
            listener(Event("reading", "progress", n, grand_total, elapsed, elapsed / done * (grand_total - n)))

    return report


def train(
    dataset: Dataset,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    listener: Listener | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Train a classifier on ``dataset`` and save it as a run folder (``out_dir`` or a new one under the runs folder).

    Raises:
        UserError: bad options, a weights problem, or an unreadable image; no run folder is left behind.
    """
    config.validate()
    stop = stop or threading.Event()
    run_dir = runs.claim_dir(out_dir) if out_dir else runs.new_run_dir(dataset.report.source)
    try:
        return _train(dataset, config, run_dir, listener, stop)
    except BaseException:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train(dataset: Dataset, config: TrainConfig, run_dir: Path, listener, stop: threading.Event) -> Result:
    started = time.time()
    keras.utils.set_random_seed(config.seed)
    train_idx, val_idx = split_dataset(dataset, config)
    paths = dataset.paths()
    n = len(train_idx) + len(val_idx)
    x_train = load_images(
        [paths[i] for i in train_idx], config.image_size, config.resize, _reading_reporter(listener, 0, n)
    )
    x_val = load_images(
        [paths[i] for i in val_idx], config.image_size, config.resize, _reading_reporter(listener, len(train_idx), n)
    )
    num_classes = len(dataset.classes)
    y_train = keras.utils.to_categorical([dataset.items[i].label for i in train_idx], num_classes)
    y_val = keras.utils.to_categorical([dataset.items[i].label for i in val_idx], num_classes)

    model = compile_model(build_model(config, num_classes), config)
    callbacks: list[keras.callbacks.Callback] = [
        ReportingCallback(config.epochs, listener, stop.is_set),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
    ]
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True)
        )
    history = model.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(x_val, y_val),
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    status = "stopped" if stop.is_set() else "completed"
    epochs_done = len(history.history.get("loss", []))
    rows = [{k: float(v[i]) for k, v in history.history.items()} for i in range(epochs_done)]
    val_loss, val_acc = model.evaluate(x_val, y_val, batch_size=config.batch_size, verbose=0)
    metrics = {
        "val_loss": float(val_loss),
        "val_accuracy": float(val_acc),
        "train_loss": rows[-1]["loss"] if rows else None,
        "train_accuracy": rows[-1]["accuracy"] if rows else None,
        "epochs_completed": epochs_done,
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "seconds": round(time.time() - started, 1),
        "precision": resolve_precision(config.precision),
        **param_counts(model),
    }
    _save(run_dir, model, dataset, config, train_idx, val_idx, metrics, status, started)
    return Result(run_dir=run_dir, status=status, metrics=metrics, history=rows)


def _save(run_dir, model, dataset, config, train_idx, val_idx, metrics, status, started) -> None:
    model.save(run_dir / "model.keras")
    runs.write_json(run_dir / "classes.json", dataset.classes)
    runs.write_json(run_dir / "config.json", config.to_dict())
    runs.write_json(run_dir / "metrics.json", metrics)
    runs.write_json(run_dir / "dataset.json", dataset.report.to_dict())
    runs.write_json(
        run_dir / "split.json",
        {
            "train": [dataset.items[i].path for i in train_idx],
            "val": [dataset.items[i].path for i in val_idx],
            "test": [it.path for it in dataset.items if it.split == "test"],
        },
    )
    # The marker goes last: a folder without it is never listed or loaded, so a crash mid-save shows nothing.
    runs.write_json(
        run_dir / runs.MARKER,
        {
            "format": runs.RUN_FORMAT,
            "version": runs.RUN_VERSION,
            "status": status,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "dataset": dataset.report.source,
            "classes": len(dataset.classes),
            "head": config.head,
            "weights": config.weights if config.weights in ("imagenet", "none") else "file",
            "image_size": config.image_size,
            "optimizer": config.optimizer,
            "val_accuracy": metrics["val_accuracy"],
            "epochs_completed": metrics["epochs_completed"],
        },
    )
