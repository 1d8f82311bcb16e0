"""Training: split, prepare the inputs, fit with a reporting callback, save the run.

    result = train(dataset, TrainConfig(weights="none", image_size=64, epochs=2), out_dir="runs/ants",
                   listener=print, stop=threading.Event())

When the layers before the trainable ones are frozen (the tutorial's default), every image goes through them
once, or comes from the disk cache, and only the trainable tail is fitted (``core.features``); otherwise the
whole model trains end to end on decoded images. With two or more GPUs, building the model, the frozen layers'
pass and fitting run mirrored over them (``core.distribute``); on one device nothing changes.
``train`` makes no UI call and can run in a worker thread.
It reports to ``listener(Event)``: which path it takes and why, preparation progress, every batch and every
epoch, with counts, elapsed time and an ETA. Setting ``stop`` ends the run within one batch; the model trained
so far is saved and the run is marked ``stopped`` (a stop before the first batch saves nothing). Only whole epochs
are recorded (events, history.csv, ``Result.history``, the train_* metrics); the validation scores in the metrics
are always the saved model's, on the whole validation split.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras

from core import calibration, distribute, runs
from core.augment import training_data
from core.cache import ArrayCache
from core.config import HEAD_LAYERS, TrainConfig
from core.dataset import Dataset, split_dataset
from core.duplicates import SplitCheck, check_split
from core.errors import Cancelled
from core.features import extract, load_images_cached, plan_training
from core.label_issues import apply_exclusions
from core.model import build_model, compile_model, fold_temperature, freeze, param_counts, resolve_precision
from core.speed import estimate, known_speed, record_run_pace, record_speed


@dataclass
class Event:
    """A progress report; ``kind`` says what ended.

    ``stage`` is "features" (images through the frozen prefix, or from the cache), "reading" (decoding images
    for end-to-end training) or "training" (batches).
    """

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
    message: str = ""  # kind "plan": which training path the run takes, and why
    phase: int = 0  # 1 or 2 in a two-phase run


Listener = Callable[[Event], None]


@dataclass
class Result:
    run_dir: Path
    status: str  # "completed" or "stopped"
    metrics: dict[str, Any]
    history: list[dict[str, float]]


class ReportingCallback(keras.callbacks.Callback):
    """Reports every batch and every whole epoch as an Event, and asks ``should_stop`` after every batch.

    A stop ends training after the current batch and skips the rest of that epoch's validation. Such an epoch is
    not whole: its loss covers part of the images and its validation part of the split, so it is not counted,
    reported, or kept in ``rows`` (nor, through ``WholeEpochs``, logged or used for early stopping).
    """

    def __init__(self, epochs: int, on_event: Listener | None, should_stop: Callable[[], bool]):
        super().__init__()
        self.epochs, self.on_event, self.should_stop = epochs, on_event, should_stop
        self.epoch = 0
        self.batches = 0
        self.completed = 0  # whole epochs over every phase
        self.rows: list[dict[str, float]] = []  # the logs of each whole epoch, with "phase" in a two-phase run
        self.whole = True  # the current epoch has not been cut short by a stop
        self.fitting = False
        self.phase = 0
        self.start: float | None = None

    def on_train_begin(self, logs=None):
        if self.start is None:  # a second phase continues the first one's clock
            self.start = time.monotonic()
        self.batches = self.params.get("steps") or 1
        self.fitting = True

    def on_train_end(self, logs=None):
        self.fitting = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.whole = True

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
            phase=self.phase,
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.on_event:
            self.on_event(self._event("batch", batch + 1, logs))
        if self.should_stop():
            self.model.stop_training = True
            if batch + 1 < self.batches or not self.params.get("steps"):  # batches left, or none can tell
                self.whole = False

    def on_test_batch_end(self, batch, logs=None):
        # Only the validation inside fit is cut short: the score of the saved model must cover the whole split.
        if self.fitting and self.should_stop():
            self.model.stop_evaluating = True
            self.whole = False

    def on_epoch_end(self, epoch, logs=None):
        if not self.whole:
            return
        self.completed += 1
        row = {k: float(v) for k, v in (logs or {}).items()}
        self.rows.append({**row, "phase": self.phase} if self.phase else row)
        if self.on_event:
            self.on_event(self._event("epoch", self.batches, logs))
        if self.should_stop():
            self.model.stop_training = True  # a stop during the epoch's end starts no epoch that would be thrown away


class WholeEpochs:
    """Mixin for a Keras callback placed after ``reporter``: an epoch a stop cut short never reaches it."""

    reporter: ReportingCallback

    def on_epoch_end(self, epoch, logs=None):
        if self.reporter.whole:
            super().on_epoch_end(epoch, logs)


class WholeEpochCSVLogger(WholeEpochs, keras.callbacks.CSVLogger):
    pass


class WholeEpochEarlyStopping(WholeEpochs, keras.callbacks.EarlyStopping):
    pass


def _stage_reporter(
    stage: str, listener: Listener | None, stop: threading.Event, offset: int, grand_total: int
) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` for reading or the feature pass: reports an Event and honours a stop."""
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        if stop.is_set():
            raise Cancelled("Stopped before training started; nothing was saved.")
        if listener and done:
            elapsed = time.monotonic() - start
            n = offset + done
            listener(Event(stage, "progress", n, grand_total, elapsed, elapsed / done * (grand_total - n)))

    return report


def train(
    dataset: Dataset,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    listener: Listener | None = None,
    stop: threading.Event | None = None,
    cache: ArrayCache | None = None,
    owner: str = "",
) -> Result:
    """Train a classifier on ``dataset`` and save it as a run folder (``out_dir`` or a new one under the runs folder).

    When the layers before the trainable ones are frozen (the tutorial's default), each image goes through them
    once (or comes from the disk cache) and only the tail trains; otherwise the whole model trains end to end.

    Raises:
        UserError: bad options, a weights problem, an unreadable image, or devices named in ``CLASSIFIER_DEVICES``
            that this machine does not have; no run folder is left behind.
        Cancelled: ``stop`` was set before training started; no run folder is left behind.
    """
    config.validate()
    # Images excluded from training (config.exclude, and a saved dataset's exclusions decided on Evaluate) are left
    # out of both training and validation; the config saved with the run names them.
    dataset, config = apply_exclusions(dataset, config)
    stop = stop or threading.Event()
    split = split_dataset(dataset, config)
    # Validation images that duplicate training images would score what the model has seen (core.duplicates);
    # hashing is paid once per saved dataset, reported as reading.
    hashing = _stage_reporter("reading", listener, stop, 0, len(dataset.items))
    split, leaks = check_split(dataset, split, config.drop_val_duplicates, hashing, config.val_duplicates_limit)
    placement = distribute.for_training(config.batch_size, len(split[0]), len(split[1]))
    run_dir = runs.claim_dir(out_dir) if out_dir else runs.new_run_dir(dataset.report.source)
    try:
        # Models must be built in the scope of the strategy they train with; on one device it is the default one.
        with placement.strategy.scope():
            cache = cache or ArrayCache()
            return _train(dataset, config, split, run_dir, listener, stop, cache, placement, owner, leaks)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


@dataclass
class Phase:
    number: int  # 1 or 2 in a two-phase run, 0 in a one-phase run
    unfreeze: int
    epochs: int
    learning_rate: float


def phases(config: TrainConfig) -> list[Phase]:
    """One phase as configured, or the two-phase recipe: the head alone, then the last K layers at a lower rate."""
    if not config.two_phase:
        return [Phase(0, config.unfreeze, config.epochs, config.learning_rate)]
    return [
        Phase(1, HEAD_LAYERS[config.head], config.epochs, config.learning_rate),
        Phase(2, config.unfreeze, config.fine_tune_epochs, config.learning_rate / config.fine_tune_lr_divisor),
    ]


def _train(
    dataset: Dataset,
    config: TrainConfig,
    split: tuple[list[int], list[int]],
    run_dir: Path,
    listener,
    stop,
    cache: ArrayCache,
    placement: distribute.Placement,
    owner: str = "",
    leaks: SplitCheck | None = None,
) -> Result:
    started = time.time()
    keras.utils.set_random_seed(config.seed)
    train_idx, val_idx = split
    strategy = placement.strategy
    mirrored = strategy.num_replicas_in_sync > 1
    # Scoring batches: on several devices, a size whose first batch splits evenly (see core.distribute).
    val_batch = distribute.evaluation_batch(strategy, config.batch_size, len(val_idx))
    paths = dataset.paths()
    train_paths, val_paths = [paths[i] for i in train_idx], [paths[i] for i in val_idx]
    n = len(paths_all := train_paths + val_paths)
    num_classes = len(dataset.classes)
    y_train = keras.utils.to_categorical([dataset.items[i].label for i in train_idx], num_classes)
    weights = (
        balanced_weights([dataset.items[i].label for i in train_idx]) if config.class_weight == "balanced" else None
    )
    y_val = keras.utils.to_categorical([dataset.items[i].label for i in val_idx], num_classes)

    model = build_model(config, num_classes)
    reporter = ReportingCallback(config.total_epochs, listener, stop.is_set)
    done_phases: list[dict[str, Any]] = []
    images = None  # decoded once, for every end-to-end phase
    stats: dict = {}
    prepare_s = fit_s = 0.0
    for phase in phases(config):
        if stop.is_set():
            break
        freeze(model, phase.unfreeze)
        plan = plan_training(model, augment=config.augmented)
        start_epoch = reporter.completed
        message = plan.reason
        if phase.number:
            what = (
                "the head alone, every VGG16 layer frozen" if phase.number == 1 else f"the last {phase.unfreeze} layers"
            )
            message = f"Phase {phase.number} of 2 ({what}, learning rate {phase.learning_rate:g}): {message}"
        if phase.number < 2 and placement.message:
            message += f" {placement.message}"
        if phase.number < 2 and (speed := known_speed(config.image_size, config.precision)):
            # The estimate covers the whole run (both phases), so it is said once, at the start.
            message += f" Estimated: {estimate(config, len(train_idx), len(val_idx), speed).text}."
        if listener:
            stage = "features" if plan.cached else "reading"
            listener(Event(stage, "plan", 0, n, 0.0, None, epoch=start_epoch + 1, message=message, phase=phase.number))
        t0 = time.monotonic()
        try:
            if plan.cached:
                progress = _stage_reporter("features", listener, stop, 0, n)
                x_all = extract(plan, paths_all, config, cache, progress, stats)
                if speed := stats.get("vgg16_images_per_second"):
                    record_speed(config.image_size, resolve_precision(config.precision), speed)
            elif images is None:
                progress = _stage_reporter("reading", listener, stop, 0, n)
                x_all = images = load_images_cached(paths_all, config.image_size, config.resize, cache, progress)
            else:
                x_all = images
        except Cancelled:
            if not done_phases:
                raise
            break  # stopped while preparing phase 2: phase 1's model is saved
        fit_model = plan.tail if plan.cached else model
        x_train, x_val = x_all[: len(train_paths)], x_all[len(train_paths) :]
        prepare_s += time.monotonic() - t0
        if stop.is_set():
            if not done_phases:
                raise Cancelled("Stopped before training started; nothing was saved.")
            break

        compile_model(fit_model, dataclasses.replace(config, learning_rate=phase.learning_rate))
        reporter.phase = phase.number
        # The reporter goes first: the callbacks after it learn from it whether the epoch ending is a whole one.
        callbacks: list[keras.callbacks.Callback] = [
            reporter,
            WholeEpochCSVLogger(str(run_dir / "history.csv"), append=bool(done_phases)),
        ]
        if config.early_stopping:
            callbacks.append(
                WholeEpochEarlyStopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True)
            )
        for callback in callbacks[1:]:
            callback.reporter = reporter
        train_data = training_data(x_train, y_train, config) if config.augmented else x_train
        t0 = time.monotonic()
        fit_model.fit(
            train_data,
            y_train if not config.augmented else None,
            # The configured batch size is the whole batch (here and in the augmented pipeline): under a
            # MirroredStrategy Keras splits each batch between the replicas, so the updates, their number and
            # their noise do not depend on how many GPUs there are.
            batch_size=None if config.augmented else config.batch_size,
            initial_epoch=start_epoch,
            epochs=start_epoch + phase.epochs,
            validation_data=(x_val, y_val),  # never augmented
            validation_batch_size=val_batch if mirrored else None,
            class_weight=weights,
            shuffle=not config.augmented,  # the augmented pipeline shuffles itself
            verbose=0,
            callbacks=callbacks,
        )
        fit_s += time.monotonic() - t0
        done_phases.append(
            {
                "phase": phase.number,
                "start_epoch": start_epoch + 1,
                "epochs_completed": reporter.completed - start_epoch,
                "unfreeze": phase.unfreeze,
                "learning_rate": phase.learning_rate,
                "path": "cached features" if plan.cached else "end to end",
                "path_reason": plan.reason,
            }
        )

    if not done_phases:
        raise Cancelled("Stopped before training started; nothing was saved.")
    status = "stopped" if stop.is_set() else "completed"
    rows = reporter.rows
    # The model as saved, on the whole validation split: after a stop, the last epoch's own validation (if any)
    # was cut short, and its weights may be a partial epoch past it. No callback here, so no stop applies.
    # Calibration: a temperature fitted on the validation split, folded into the last layer (the tail shares it),
    # so the saved model gives calibrated probabilities; the threshold for "not sure" is chosen on the same images.
    val_probs = fit_model.predict(x_val, batch_size=val_batch, verbose=0)
    trust = calibration.calibrate(val_probs, y_val.argmax(axis=1), enabled=config.calibrate)
    if trust.temperature != 1.0:
        fold_temperature(model, trust.temperature)
    val_loss, val_acc = fit_model.evaluate(x_val, y_val, batch_size=val_batch, verbose=0)
    metrics = {
        "val_loss": float(val_loss),
        "val_accuracy": float(val_acc),
        "train_loss": rows[-1]["loss"] if rows else None,
        "train_accuracy": rows[-1]["accuracy"] if rows else None,
        "epochs_completed": reporter.completed,
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "seconds": round(time.time() - started, 1),
        "precision": resolve_precision(config.precision),
        "path": done_phases[-1]["path"],
        "path_reason": done_phases[-1]["path_reason"],
        ("feature_seconds" if stats else "load_seconds"): round(prepare_s, 2),
        "fit_seconds": round(fit_s, 2),
        **param_counts(model),
    }
    if names := distribute.devices(strategy):  # recorded only when not on TensorFlow's default strategy
        metrics["distribution"] = {
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "devices": names,
        }
    metrics["calibration"] = {
        "temperature": round(trust.temperature, 4),
        "ece_before": trust.ece_before,
        "ece_after": trust.ece_after,
        "threshold": trust.threshold,
        "coverage": trust.coverage,
    }
    if config.exclude:
        metrics["excluded_images"] = len(config.exclude)
    if leaks is not None:
        metrics.update(leaks.metrics())  # val_duplicates_dropped (and which), val_duplicates, test_duplicates
    if weights:
        metrics["class_weights"] = {dataset.classes[c]: round(w, 4) for c, w in sorted(weights.items())}
    if config.augmented:
        metrics["augmentation"] = augmentation_summary(config)
    if config.two_phase:
        metrics["phases"] = done_phases
        if len(done_phases) > 1:
            metrics["phase2_start_epoch"] = done_phases[1]["start_epoch"]
    if stats:
        metrics["cache_hits"], metrics["cache_misses"] = stats["hits"], stats["misses"]
        if stats["misses"]:
            metrics["feature_images_per_second"] = round(stats["misses"] / max(stats["feature_seconds"], 1e-9), 2)
    record_run_pace(config, metrics, status)  # later estimates learn from this run's measured pace
    calibration.save(run_dir, trust)  # before _save, whose marker comes last
    _save(run_dir, model, dataset, config, train_idx, val_idx, metrics, status, started, owner)
    return Result(run_dir=run_dir, status=status, metrics=metrics, history=rows)


def balanced_weights(labels: list[int]) -> dict[int, float]:
    """Each class's weight for ``class_weight="balanced"``: n / (k * n_c) over the k classes with training images,
    so every class weighs as much in the loss as if all had the same number of images (scikit-learn's rule)."""
    counts = Counter(labels)
    return {c: len(labels) / (len(counts) * n) for c, n in counts.items()}


def augmentation_summary(config: TrainConfig) -> str:
    """The augmentation a config asks for, in words: 'flip, rotation 15°, zoom 0.1'."""
    parts = ["flip"] if config.augment_flip else []
    if config.augment_rotation:
        parts.append(f"rotation {config.augment_rotation:g}°")
    for name in ("zoom", "translation", "contrast", "brightness"):
        if value := getattr(config, f"augment_{name}"):
            parts.append(f"{name} {value:g}")
    return ", ".join(parts)


def _save(run_dir, model, dataset, config, train_idx, val_idx, metrics, status, started, owner="") -> None:
    model.save(run_dir / "model.keras")
    runs.write_json(run_dir / "classes.json", dataset.classes)
    runs.write_json(run_dir / "config.json", config.to_dict())
    runs.write_json(run_dir / "metrics.json", metrics)
    runs.write_json(run_dir / "dataset.json", dataset.report.to_dict())
    runs.write_json(
        run_dir / "split.json",
        {
            "root": str(dataset.root.resolve()),  # while it exists, evaluation can find the images again
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
            "dataset_id": dataset.id,  # the saved dataset (core.datasets), "" when trained from a zip path
            "owner": owner,  # who may delete it when sign-in is on ('' = everyone's)
            "classes": len(dataset.classes),
            "head": config.head,
            "weights": config.weights if config.weights in ("imagenet", "none") else "file",
            "image_size": config.image_size,
            "optimizer": config.optimizer,
            "val_accuracy": metrics["val_accuracy"],
            "epochs_completed": metrics["epochs_completed"],
        },
    )
