"""Training: split, prepare the inputs, fit with a reporting callback, save the run.

    result = train(dataset, TrainConfig(weights="none", image_size=64, epochs=2), out_dir="runs/ants",
                   listener=print, stop=threading.Event())

When the layers before the trainable ones are frozen (the tutorial's default), every image goes through them
once, or comes from the disk cache, and only the trainable tail is fitted (``core.train.features``); otherwise the
whole model trains end to end on decoded images. With two or more GPUs, building the model, the frozen layers'
pass and fitting run mirrored over them (``core.model.distribute``); on one device nothing changes.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core.config import TrainConfig
from core.data.dataset import Dataset, split_dataset
from core.data.duplicates import SplitCheck, check_split
from core.model import calibration, distribute, ood
from core.model.build import as_float32, build_model, compile_model, fold_temperature, freeze, resolve_precision
from core.train import record
from core.train.augment import training_data
from core.train.cache import ArrayCache
from core.train.callbacks import (
    Event,
    Listener,
    ReportingCallback,
    WholeEpochCSVLogger,
    WholeEpochEarlyStopping,
    stage_reporter,
)  # fmt: skip
from core.train.estimates import estimate, record_run_pace
from core.train.feature_file import Batches, FeatureFile, sample_weights
from core.train.features import extract, load_images_cached, plan_training
from core.train.pace import known_speed, record_speed
from core.train.phases import Phase, phases
from core.train.record import balanced_weights
from core.util.errors import Cancelled
from core.workspace import runs
from core.workspace.decisions import apply_exclusions

OOD_FIT_IMAGES = 20_000  # training images "none of these" is fitted on, at most


@dataclass
class Result:
    run_dir: Path
    status: str  # "completed" or "stopped"
    metrics: dict[str, Any]
    history: list[dict[str, float]]


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
    # The version of a saved dataset it trains on goes into config.json (None: a zip or a folder, no versions).
    config = dataclasses.replace(config, dataset_version=dataset.version or None)
    stop = stop or threading.Event()
    split = split_dataset(dataset, config)
    # Validation images that duplicate training images would score what the model has seen (core.data.duplicates);
    # hashing is paid once per saved dataset, reported as reading.
    hashing = stage_reporter("reading", listener, stop, 0, len(dataset.items))
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
class _Inputs:
    """What every phase trains and validates on."""

    train_paths: list[Path]
    val_paths: list[Path]
    y_train: Any
    y_val: Any
    weights: dict[int, float] | None
    val_batch: int
    mirrored: bool

    @property
    def paths(self) -> list[Path]:
        return self.train_paths + self.val_paths


def _inputs(dataset: Dataset, config: TrainConfig, split, placement: distribute.Placement) -> _Inputs:
    train_idx, val_idx = split
    paths, classes = dataset.paths(), len(dataset.classes)
    labels = [dataset.items[i].label for i in train_idx]
    strategy = placement.strategy
    return _Inputs(
        train_paths=[paths[i] for i in train_idx],
        val_paths=[paths[i] for i in val_idx],
        y_train=keras.utils.to_categorical(labels, classes),
        y_val=keras.utils.to_categorical([dataset.items[i].label for i in val_idx], classes),
        weights=balanced_weights(labels) if config.class_weight == "balanced" else None,
        # Scoring batches: on several devices, a size whose first batch splits evenly (see core.model.distribute).
        val_batch=distribute.evaluation_batch(strategy, config.batch_size, len(val_idx)),
        mirrored=strategy.num_replicas_in_sync > 1,
    )


def _plan_message(phase: Phase, reason: str, placement, config: TrainConfig, data: _Inputs) -> str:
    message = reason
    if phase.number:
        what = (
            "the head alone, every backbone layer frozen" if phase.number == 1
            else f"the head and the last {phase.blocks} blocks" if config.backbone != "vgg16"
            else f"the last {phase.unfreeze} layers"
        )  # fmt: skip
        message = f"Phase {phase.number} of 2 ({what}, learning rate {phase.learning_rate:g}): {message}"
    if phase.number < 2 and placement.message:
        message += f" {placement.message}"
    vgg = config.backbone == "vgg16"  # the time model counts VGG16's convolutions
    if phase.number < 2 and vgg and (speed := known_speed(config.image_size, config.precision)):
        # The estimate covers the whole run (both phases), so it is said once, at the start.
        message += f" Estimated: {estimate(config, len(data.train_paths), len(data.val_paths), speed).text}."
    return message


def _prepare(plan, data: _Inputs, config: TrainConfig, cache, listener, stop, stats: dict, images):
    """The phase's inputs: frozen-prefix features (cached path) or decoded images (end to end, decoded once for
    every such phase); returns (inputs, decoded images)."""
    n = len(data.paths)
    if plan.cached:
        progress = stage_reporter("features", listener, stop, 0, n)
        # A large set's features stay on disk, read in batches (not under several devices: they split arrays)
        x_all = extract(plan, data.paths, config, cache, progress, stats, stream=not data.mirrored)
        if speed := stats.get("vgg16_images_per_second"):
            record_speed(config.image_size, resolve_precision(config.precision), speed)
        return x_all, images
    if images is None:
        progress = stage_reporter("reading", listener, stop, 0, n)
        images = load_images_cached(data.paths, config.image_size, config.resize, cache, progress)
    return images, images


def _on_disk(x_all, data: _Inputs, config: TrainConfig) -> dict:
    """``fit``'s data arguments for features in a ``FeatureFile``: batches read from disk, reshuffled each epoch."""
    n = len(data.train_paths)
    weights = sample_weights(data.y_train, data.weights)
    train = Batches(x_all, range(n), data.y_train, config.batch_size, True, config.seed, weights)
    return {"x": train, "validation_data": Batches(x_all, range(n, len(x_all)), data.y_val, data.val_batch)}


def _validation(x_all, data: _Inputs):
    """The validation inputs: a slice of the array, or batches of the file's last rows."""
    if isinstance(x_all, FeatureFile):
        return Batches(x_all, range(len(data.train_paths), len(x_all)), None, data.val_batch)
    return x_all[len(data.train_paths) :]


def _predict(model, x, batch: int) -> np.ndarray:
    if isinstance(x, Batches):
        return model.predict(x, verbose=0)
    return model.predict(x, batch_size=batch, verbose=0)


def _evaluate(model, x, data: _Inputs):
    if isinstance(x, Batches):
        return model.evaluate(Batches(x.store, x.index, data.y_val, data.val_batch), verbose=0)
    return model.evaluate(x, data.y_val, batch_size=data.val_batch, verbose=0)


def _fit(fit_model, phase: Phase, x_all, data: _Inputs, config: TrainConfig, reporter, run_dir: Path, again: bool):
    """One phase's fit, from the reporter's epoch on; returns the validation inputs."""
    compile_model(fit_model, dataclasses.replace(config, learning_rate=phase.learning_rate))
    reporter.phase = phase.number
    # The reporter goes first: the callbacks after it learn from it whether the epoch ending is a whole one.
    callbacks: list[keras.callbacks.Callback] = [
        reporter, WholeEpochCSVLogger(str(run_dir / "history.csv"), append=again),
    ]  # fmt: skip
    if config.early_stopping:
        callbacks.append(
            WholeEpochEarlyStopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True)
        )
    for callback in callbacks[1:]:
        callback.reporter = reporter
    start_epoch = reporter.completed
    if isinstance(x_all, FeatureFile):
        fit_model.fit(**_on_disk(x_all, data, config), initial_epoch=start_epoch, epochs=start_epoch + phase.epochs,
                      verbose=0, callbacks=callbacks)  # fmt: skip
        return _validation(x_all, data)
    x_train, x_val = x_all[: len(data.train_paths)], x_all[len(data.train_paths) :]
    fit_model.fit(
        training_data(x_train, data.y_train, config) if config.augmented else x_train,
        data.y_train if not config.augmented else None,
        # The configured batch size is the whole batch (here and in the augmented pipeline): under a
        # MirroredStrategy Keras splits each batch between the replicas, so the updates, their number and
        # their noise do not depend on how many GPUs there are.
        batch_size=None if config.augmented else config.batch_size,
        initial_epoch=start_epoch,
        epochs=start_epoch + phase.epochs,
        validation_data=(x_val, data.y_val),  # never augmented
        validation_batch_size=data.val_batch if data.mirrored else None,
        class_weight=data.weights,
        shuffle=not config.augmented,  # the augmented pipeline shuffles itself
        verbose=0,
        callbacks=callbacks,
    )
    return x_val


def _none_of_these(fit_model, x_all, data: _Inputs, config: TrainConfig, classes: list[str]):
    """(state, "") of "none of these" (core.model.ood), fitted on the training images' penultimate features and
    thresholded on the validation images'; (None, why not) when the run cannot have it.

    The features come from what was fitted, on the inputs still in memory: through the trainable tail alone from
    the frozen prefix's features (no second pass through the frozen layers), else from the decoded images; in
    float32, as the saved model answers.
    """
    if why := ood.why_not(config.none_of_these_rate, len(data.val_paths)):
        return None, why
    try:
        features = as_float32(ood.features_model(fit_model))
    except ValueError as exc:  # a model whose last layer is not "predictions"
        return None, f"the model cannot be read for it ({exc})."
    if why := ood.why_not(config.none_of_these_rate, len(data.val_paths), int(features.outputs[0].shape[-1])):
        return None, why
    n = len(data.train_paths)
    y_train, y_val = data.y_train.argmax(axis=1), data.y_val.argmax(axis=1)
    # At most OOD_FIT_IMAGES training images (an even random draw) give the class means and the covariance: enough
    # for a d x d estimate, and a 100 000-image set does not hold its penultimate features twice in float64.
    fit_rows = np.arange(n)
    if n > OOD_FIT_IMAGES:
        fit_rows = np.sort(np.random.default_rng(config.seed).choice(n, OOD_FIT_IMAGES, replace=False))
    rows = np.concatenate([fit_rows, np.arange(n, n + len(data.val_paths))])
    if isinstance(x_all, FeatureFile):
        f = features.predict(Batches(x_all, rows, None, data.val_batch), verbose=0)
    else:
        f = features.predict(x_all[rows] if n > OOD_FIT_IMAGES else x_all, batch_size=data.val_batch, verbose=0)
    f = np.asarray(f, np.float32).reshape(len(rows), -1)
    k = len(fit_rows)
    return ood.fit_run(f[:k], y_train[fit_rows], f[k:], y_val, classes, config.none_of_these_rate), ""


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
    """Every phase in turn (a stop while preparing phase 2 keeps phase 1's model), then the run recorded.

    Long: the phases in turn and what follows them share the model, the reporter and the timings; preparing,
    fitting and recording are calls already.
    """
    started = time.time()
    keras.utils.set_random_seed(config.seed)
    data = _inputs(dataset, config, split, placement)
    n = len(data.paths)
    model = build_model(config, len(dataset.classes))
    reporter = ReportingCallback(config.total_epochs, listener, stop.is_set)
    done: list[dict[str, Any]] = []
    images = fit_model = x_val = None
    stats: dict = {}
    seconds = {"prepare": 0.0, "fit": 0.0}
    for phase in phases(config):
        if stop.is_set():
            break
        freeze(model, phase.unfreeze, phase.blocks)
        plan = plan_training(model, augment=config.augmented)
        start_epoch = reporter.completed
        if listener:
            message = _plan_message(phase, plan.reason, placement, config, data)
            listener(Event("features" if plan.cached else "reading", "plan", 0, n, 0.0, None, epoch=start_epoch + 1,
                           message=message, phase=phase.number))  # fmt: skip
        t0 = time.monotonic()
        try:
            x_all, images = _prepare(plan, data, config, cache, listener, stop, stats, images)
        except Cancelled:
            if not done:
                raise
            break  # stopped while preparing phase 2: phase 1's model is saved
        seconds["prepare"] += time.monotonic() - t0
        if stop.is_set():
            if not done:
                raise Cancelled("Stopped before training started; nothing was saved.")
            break
        fit_model = plan.tail if plan.cached else model
        t0 = time.monotonic()
        x_val = _fit(fit_model, phase, x_all, data, config, reporter, run_dir, again=bool(done))
        x_fitted = x_all  # what fit_model was fitted on: the inputs its penultimate features come from
        seconds["fit"] += time.monotonic() - t0
        done.append({
            "phase": phase.number, "start_epoch": start_epoch + 1, "epochs_completed": reporter.completed - start_epoch,
            "unfreeze": phase.unfreeze, "learning_rate": phase.learning_rate,
            "path": "cached features" if plan.cached else "end to end", "path_reason": plan.reason,
        })  # fmt: skip
    if not done:
        raise Cancelled("Stopped before training started; nothing was saved.")
    status = "stopped" if stop.is_set() else "completed"
    # The model as saved, on the whole validation split: after a stop, the last epoch's own validation (if any)
    # was cut short, and its weights may be a partial epoch past it. No callback here, so no stop applies.
    # Calibration: a temperature fitted on the validation split, folded into the last layer (the tail shares it),
    # so the saved model gives calibrated probabilities; the threshold for "not sure" is chosen on the same images.
    val_probs = _predict(fit_model, x_val, data.val_batch)
    trust = calibration.calibrate(val_probs, data.y_val.argmax(axis=1), enabled=config.calibrate)
    if trust.temperature != 1.0:
        fold_temperature(model, trust.temperature)
    val_loss, val_acc = _evaluate(fit_model, x_val, data)
    unlike, unlike_reason = _none_of_these(fit_model, x_fitted, data, config, dataset.classes)
    if isinstance(x_fitted, FeatureFile):
        x_fitted.close()
    metrics = record.metrics(
        config, dataset, model, placement.strategy, reporter.rows, reporter.completed, done, split, trust,
        val_loss=float(val_loss), val_accuracy=float(val_acc), seconds=time.time() - started, stats=stats,
        prepare_seconds=seconds["prepare"], fit_seconds=seconds["fit"], leaks=leaks, weights=data.weights,
    )  # fmt: skip
    if unlike is not None:
        metrics["none_of_these"] = unlike.summary()
    record_run_pace(config, metrics, status)  # later estimates learn from this run's measured pace
    calibration.save(run_dir, trust)  # before the run is saved, whose marker comes last
    ood.save(run_dir, unlike, unlike_reason)
    record.save(run_dir, model, dataset, config, split, metrics, status, started, owner)
    return Result(run_dir=run_dir, status=status, metrics=metrics, history=reporter.rows)
