"""One backbone's trial in the bake-off (``core.publish.bakeoff``): build it, run its frozen layers once per image
(through the feature cache, as a training does), train a head on those features, then measure the whole model: its
size, one image's latency in float32 and, when asked, the accuracy of its full-integer int8 LiteRT file.

    images = split_images(dataset, config)           # the training's own split, exclusions and duplicate check
    figures = run_trial(config, images, report)      # {"val_accuracy": 0.9, "size_mb": 3.9, "latency_ms": 2.1, ...}
    latency_ms(model, 224)                           # median ms of one image, float32, one compiled graph

``report(step, done, total)`` is called as the trial goes (``features``, ``training the head``, ``timing one image``,
``int8 …``) at least once per batch, and may raise ``Cancelled`` to end the trial there.

Latency is the whole float32 model (``core.model.build.as_float32``) on one uint8 image, compiled as the feature pass
is (``core.train.features.compiled``), the median of ``LATENCY_RUNS`` calls after ``WARMUP``, on this process's
TensorFlow thread pools (every core it may use). Size is the float32 model's parameter bytes (every weight, batch
normalisation's statistics included) in MB of 10^6 bytes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core.config import TrainConfig
from core.data.dataset import Dataset, split_dataset
from core.data.duplicates import check_split
from core.model.build import as_float32, build_model, compile_model, param_counts, resolve_precision
from core.publish.export import write_litert
from core.publish.runtimes import BATCH, all_threads, open_runtime
from core.train.cache import ArrayCache
from core.train.features import compiled, extract, load_images_cached, plan_training
from core.train.pace import record_speed
from core.util.errors import UserError
from core.workspace.decisions import apply_exclusions

LATENCY_RUNS = 20  # timed calls of one image
WARMUP = 3  # calls before timing: the first traces and compiles the graph
REPRESENTATIVE = 100  # training images the int8 file is calibrated on (TensorFlow's guide asks for ~100)
BYTES_PER_PARAM = 4  # float32
HEAD_STEP, TIMING_STEP = "training the head", "timing one image"

Report = Callable[[str, int, int], None]  # (step, done, total); may raise Cancelled


@dataclass
class Images:
    """The images every backbone trains and is validated on, and their classes (indices into ``classes``)."""

    train_paths: list[Path]
    val_paths: list[Path]
    y_train: np.ndarray
    y_val: np.ndarray
    classes: list[str]

    @property
    def paths(self) -> list[Path]:
        return self.train_paths + self.val_paths


def split_images(dataset: Dataset, config: TrainConfig, progress: Callable[[int, int], None] | None = None) -> Images:
    """The images a training with ``config`` would use: the dataset's exclusions left out, its split
    (``core.data.dataset.split_dataset``) and the validation images that duplicate training ones dropped as the config
    says (``core.data.duplicates.check_split``; ``progress`` counts the images hashed for it).

    Raises:
        UserError: the exclusions leave a class too small, or the split has no training or no validation image.
    """
    dataset, config = apply_exclusions(dataset, config)
    split = split_dataset(dataset, config)
    (train_idx, val_idx), _ = check_split(dataset, split, config.drop_val_duplicates, progress,
                                          config.val_duplicates_limit)  # fmt: skip
    if not train_idx or not val_idx:
        raise UserError(
            f"The bake-off needs training and validation images; {dataset.title} splits into {len(train_idx)} "
            f"training and {len(val_idx)} validation images."
        )
    paths = dataset.paths()
    return Images(
        train_paths=[paths[i] for i in train_idx],
        val_paths=[paths[i] for i in val_idx],
        y_train=np.array([dataset.items[i].label for i in train_idx], dtype=np.int64),
        y_val=np.array([dataset.items[i].label for i in val_idx], dtype=np.int64),
        classes=list(dataset.classes),
    )


def run_trial(
    config: TrainConfig, images: Images, report: Report, int8: bool = False, cache: ArrayCache | None = None
) -> dict:
    """Build ``config``'s model (its backbone frozen), train its head on cached features, measure it: the figures of
    its row in the bake-off's table.

    Raises:
        UserError: the model cannot be built with these options (a weights problem, an image it cannot read).
        Cancelled: ``report`` raised it (a stop).
    """
    cache = cache or ArrayCache()
    report("building the model", 0, 1)
    keras.utils.set_random_seed(config.seed)  # random weights are the same every time, so the feature cache hits
    model = build_model(config, len(images.classes))
    plan = plan_training(model)
    if not plan.cached:
        raise RuntimeError(f"the frozen {config.backbone} has no prefix to cache: {plan.reason}")
    stats: dict = {}
    x = extract(plan, images.paths, config, cache, lambda done, total: report("features", done, total), stats)
    if speed := stats.get("vgg16_images_per_second"):  # VGG16's full pass: the Train page's time estimates learn it
        record_speed(config.image_size, resolve_precision(config.precision), speed)
    accuracy, epochs, fit_seconds = fit_head(plan.tail, config, x, images, report)
    float32 = as_float32(model)
    counts = param_counts(float32)
    params = counts["trainable"] + counts["frozen"]
    misses, seconds = stats.get("misses", 0), stats.get("feature_seconds", 0.0)
    figures = {
        "val_accuracy": accuracy,
        "params": params,
        "size_mb": round(params * BYTES_PER_PARAM / 1e6, 3),
        "latency_ms": round(latency_ms(float32, config.image_size, report), 3),
        "latency_threads": all_threads(),
        "epochs": epochs,
        "feature_seconds": round(seconds, 3),
        "feature_images_per_second": round(misses / seconds, 2) if misses and seconds > 0 else None,
        "fit_seconds": round(fit_seconds, 3),
        "cache_hits": stats.get("hits", 0),
        "cache_misses": misses,
    }
    if int8:
        figures |= int8_scores(float32, config, images, cache, report)
    return figures


class _Reporting(keras.callbacks.Callback):
    """The head's epochs as progress, reported after every batch too, so that a stop (``report`` raising) ends the
    fit within one batch."""

    def __init__(self, report: Report, epochs: int):
        super().__init__()
        self.report, self.epochs, self.done = report, epochs, 0

    def on_train_batch_end(self, batch, logs=None):
        self.report(HEAD_STEP, self.done, self.epochs)

    def on_epoch_end(self, epoch, logs=None):
        self.done = epoch + 1
        self.report(HEAD_STEP, self.done, self.epochs)


def fit_head(tail: keras.Model, config: TrainConfig, x: np.ndarray, images: Images, report: Report):
    """Train the head (``tail``, on the frozen features ``x``: training images first) for up to ``config.epochs``,
    stopping early on the validation loss with its best weights kept; (validation accuracy, epochs, seconds)."""
    n, eye = len(images.train_paths), np.eye(len(images.classes), dtype=np.float32)
    x_train, x_val, y_train, y_val = x[:n], x[n:], eye[images.y_train], eye[images.y_val]
    compile_model(tail, config)
    callbacks = [_Reporting(report, config.epochs)]
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True)
        )
    start = time.monotonic()
    history = tail.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs, verbose=0,
                       validation_data=(x_val, y_val), shuffle=True, callbacks=callbacks)  # fmt: skip
    seconds = time.monotonic() - start
    probs = np.asarray(tail.predict(x_val, batch_size=config.batch_size, verbose=0))
    return float(np.mean(probs.argmax(axis=1) == images.y_val)), len(history.history.get("loss", [])), seconds


def latency_ms(model: keras.Model, size: int, report: Report | None = None, runs: int = LATENCY_RUNS,
               warmup: int = WARMUP) -> float:  # fmt: skip
    """The median milliseconds of ``model`` on one ``size`` x ``size`` uint8 image, in one compiled graph, after
    ``warmup`` calls (a stop is seen between calls)."""
    run = compiled(model)
    one = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    if report:
        report(TIMING_STEP, 0, runs)
    for _ in range(warmup):
        np.asarray(run(one))  # the result as numpy: the call has finished
    seconds = []
    for i in range(runs):
        start = time.perf_counter()
        np.asarray(run(one))
        seconds.append(time.perf_counter() - start)
        if report:
            report(TIMING_STEP, i + 1, runs)
    return 1000 * statistics.median(seconds)


def int8_scores(model: keras.Model, config: TrainConfig, images: Images, cache: ArrayCache, report: Report) -> dict:
    """The trained float32 ``model`` as a full-integer int8 LiteRT file (``core.publish.export.write_litert``,
    calibrated on up to ``REPRESENTATIVE`` training images spread over the list), scored on the validation images
    in the LiteRT interpreter: its accuracy and file size, or ``int8_error`` when it cannot be converted."""
    n = len(images.train_paths)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(REPRESENTATIVE, n))})
    report("int8: reading images", 0, 1)
    size, resize = config.image_size, config.resize
    calibration = load_images_cached([images.train_paths[i] for i in picks], size, resize, cache)
    squares = load_images_cached(images.val_paths, size, resize, cache)
    report("int8: converting", 0, 1)
    with tempfile.TemporaryDirectory(prefix="bakeoff-int8-") as tmp:
        path = Path(tmp) / "model_int8.tflite"
        try:
            # write_litert reads only the run's model: the trained one stands in for a saved run
            write_litert(types.SimpleNamespace(model=model), path, "int8", calibration)
        except Exception as exc:  # a converter that refuses an op of this backbone: the float figures stand
            return {"int8_error": f"The int8 conversion failed: {type(exc).__name__}: {str(exc)[:300]}"}
        nbytes = path.stat().st_size
        runtime, probs = open_runtime("litert-int8", path), []
        for b in range(0, len(squares), BATCH):
            probs.append(runtime(squares[b : b + BATCH]))
            report("int8: scoring", min(b + BATCH, len(squares)), len(squares))
    accuracy = float(np.mean(np.concatenate(probs).argmax(axis=1) == images.y_val))
    return {"int8_accuracy": accuracy, "int8_size_mb": round(nbytes / 1e6, 3)}
