"""Learning-rate range test: a short run with the learning rate growing exponentially, loss recorded per batch.

    finding = lr_find(dataset, TrainConfig(weights="none", image_size=64, optimizer="adam"))
    finding.suggestion      # the rate where the smoothed loss falls fastest, or None with finding.reason

The model, optimizer and freeze are the ones the config would train (phase 1 of a two-phase run); training
images only, never the validation ones, and no augmentation. When the layers before the trainable ones are
frozen, their outputs come from the same feature cache training uses, so the test itself takes seconds.
Nothing is saved: the test's weights are thrown away.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core.config import LR_FIND_END, LR_FIND_START, LR_FIND_STEPS, TrainConfig, check_lr_range
from core.data.dataset import Dataset, split_dataset
from core.model.build import build_model, compile_model, freeze, resolve_precision
from core.train.cache import ArrayCache
from core.train.features import extract, load_images_cached, plan_training
from core.train.pace import record_speed
from core.train.phases import phases
from core.util.errors import Cancelled

SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected (as fastai's lr_find)
DIVERGED = 4.0  # stop once the smoothed loss is this many times its best

Progress = Callable[[str, int, int], None]  # (stage, done, total): "features"/"reading", then "testing"


@dataclass
class LRFinding:
    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    reason: str  # how the suggestion was chosen, or why there is none
    path: str  # "cached features" or "end to end"
    seconds: float
    optimizer: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    out: list[float] = []
    for loss in losses:
        out.append(smooth_next(out, loss, beta))
    return out


def smooth_next(smoothed: list[float], loss: float, beta: float = SMOOTHING) -> float:
    """The next value of a bias-corrected exponential moving average, given the values so far."""
    n = len(smoothed)
    avg = smoothed[-1] * (1 - beta**n) if n else 0.0  # undo the previous correction
    return (beta * avg + (1 - beta) * loss) / (1 - beta ** (n + 1))


def suggest(learning_rates: list[float], smoothed: list[float]) -> tuple[float | None, str]:
    """The rate where the smoothed loss falls fastest against log(lr), before its minimum.

    The slope is measured across a window of a tenth of the test, so the noise of single batches at the
    start (where nothing is learnt yet) cannot pass for a fall.
    """
    n = len(smoothed)
    if n < 10:
        return None, "The test stopped after too few batches to judge; try a smaller start rate or more steps."
    loss, logs = np.asarray(smoothed), np.log10(np.asarray(learning_rates))
    best = int(np.argmin(loss))
    k = max(1, n // 10)
    if best < 2 * k or loss[best] > 0.95 * loss[:k].mean():
        return None, (
            "The loss never fell clearly over the tested range: with these settings the model hardly learns "
            "(try unfreezing other layers or another optimizer)."
        )
    centres = np.arange(k, best - k + 1)  # every window ends at or before the minimum
    slope = (loss[centres + k] - loss[centres - k]) / (logs[centres + k] - logs[centres - k])
    i = int(centres[np.argmin(slope)])
    where = "at the end of the tested range" if best == n - 1 else f"at {learning_rates[best]:.1e}"
    return float(learning_rates[i]), f"where the loss falls fastest; it is lowest {where}"


def lr_find(
    dataset: Dataset,
    config: TrainConfig,
    start: float = LR_FIND_START,
    end: float = LR_FIND_END,
    steps: int = LR_FIND_STEPS,
    cache: ArrayCache | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> LRFinding:
    """Run the range test; see the module docstring. Raises UserError for bad bounds, Cancelled on ``stop``.

    Long: the range test is one loop over batches with its smoothing, stop and divergence checks, which share
    its running state.
    """
    config.validate()
    check_lr_range(start, end, steps)
    stop = stop or threading.Event()
    began = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    train_idx, _ = split_dataset(dataset, config)
    paths = dataset.paths()
    train_paths = [paths[i] for i in train_idx]
    y = keras.utils.to_categorical([dataset.items[i].label for i in train_idx], len(dataset.classes))

    model = build_model(config, len(dataset.classes))
    first = phases(config)[0]
    freeze(model, first.unfreeze, first.blocks)
    plan = plan_training(model)

    def stage(name: str):
        def report(done: int, total: int) -> None:
            if stop.is_set():
                raise Cancelled("Learning-rate test stopped.")
            if progress:
                progress(name, done, total)

        return report

    cache = cache or ArrayCache()
    if plan.cached:
        stats: dict = {}
        x = extract(plan, train_paths, config, cache, stage("features"), stats)
        if speed := stats.get("vgg16_images_per_second"):  # a full pass also times this server for estimates
            record_speed(config.image_size, resolve_precision(config.precision), speed)
    else:
        x = load_images_cached(train_paths, config.image_size, config.resize, cache, stage("reading"))
    fit_model = plan.tail if plan.cached else model
    compile_model(fit_model, dataclasses.replace(config, learning_rate=start, decay=0.0))

    rng = np.random.default_rng(config.seed)
    batch = min(config.batch_size, len(x))
    order: list[int] = []
    lrs, losses, smoothed = [], [], []
    best = math.inf
    report = stage("testing")
    for i in range(steps):
        if len(order) < batch:
            order += rng.permutation(len(x)).tolist()
        idx, order = order[:batch], order[batch:]
        lr = start * (end / start) ** (i / (steps - 1))
        fit_model.optimizer.learning_rate = lr
        loss = float(fit_model.train_on_batch(x[idx], y[idx], return_dict=True)["loss"])
        report(i + 1, steps)
        if not math.isfinite(loss):
            break
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(smooth_next(smoothed, loss))
        best = min(best, smoothed[-1])
        if i > 5 and smoothed[-1] > DIVERGED * best:
            break
    if progress:
        progress("testing", steps, steps)
    suggestion, reason = suggest(lrs, smoothed)
    return LRFinding(
        learning_rates=lrs,
        losses=losses,
        smoothed=smoothed,
        suggestion=suggestion,
        reason=reason,
        path="cached features" if plan.cached else "end to end",
        seconds=round(time.monotonic() - began, 2),
        optimizer=config.optimizer,
    )
