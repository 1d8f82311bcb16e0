"""How long a run will take on this server, told before it starts, for every kind of run.

    speed = known_speed(96, "auto")               # images/s through VGG16's convolutions at 96 px, or None
    if speed is None:
        job = measure_in_background(96, "auto", owner=user)  # the speed probe, queued as a job; read again later
        probe(96, "auto")                         # that job while it is queued or running, with its progress
    est = estimate(config, n_train=245, n_val=153, speed=speed, unfrozen=["block1_conv1", ..., "predictions"])
    est.seconds, est.path, est.text               # the whole run, the path it takes, one sentence for the user
    record_run_pace(config, result.metrics)       # after a run: its measured fit time corrects later estimates

Everything is read from ``speed.json`` in the cache folder, written by three kinds of measurement:

* the *forward speed* (images per second through every VGG16 convolution, compiled, inference) at a size and
  precision: by every full feature pass of a real run, and by the speed probe;
* the *fit costs* at a size, by the speed probe: what Keras ``fit`` costs per image relative to that forward pass
  when every layer trains, when only the head trains behind frozen convolutions, and per validation image, plus
  the one-off graph tracing. At small sizes per-image overhead dominates, so these are measured at the size
  asked for, never scaled by pixel count from 224 px (which made a 6-minute run at 96 px read "2:41");
* a *correction per kind of run* (cached features, end to end, end to end with augmentation), from finished
  runs: their measured fit time over the time this model predicted for them.

The speed probe is a job like a training (``core.jobs``, kind ``SPEED``): it waits for a free slot, since on
2 cores it would distort a running training and be distorted by it, lets the work people asked for go first, and
it shows on the Jobs page. The command
line's ``python -m core speed`` runs the same measurement in its own process.

This module never imports TensorFlow: the web page estimates in its own script run. ``auto`` precision is
resolved by whoever measured with TensorFlow loaded, and the answer is kept in the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import jobs
from core.cache import cache_dir
from core.config import HEAD_LAYERS, TrainConfig
from core.errors import Cancelled
from core.vgg16 import layer_table

FILE = "speed.json"
CACHED, END_TO_END = "cached features", "end to end"  # the paths, as core.training names them in metrics["path"]
AUGMENTED = "end to end, augmented"  # a kind of run for the correction: augmentation has a cost of its own
FROZEN = ", convolutions frozen"  # ... and so has a fit that runs the convolutions forward only
NEAR = 1.25  # a speed measured at a size within this factor of another stands in for it (scaled by pixels)
PROBE_IMAGES = 16  # images per timed batch in the speed probe (the feature pass's batch); 8 above 128 px
STAGE = "measuring"  # the probe's stage, as its job reports its progress
RETRY_AFTER = 600.0  # seconds before a probe that ended without a speed is queued again for the same size

# What Keras fit costs per image, in units of one compiled forward pass through every convolution, until the
# probe has measured it here (bfloat16 on a 2-core AVX512-BF16 EPYC at 32-224 px: 2.9-4.1, 0.7-1.0, 0.8-1.5).
DEFAULT_FIT = {"train_all": 3.5, "fit_forward": 0.9, "test": 1.0, "trace_train": 5.0, "trace_frozen": 1.0}
FIXED_SECONDS = 1.5  # building the model, compiling, saving the run folder (ants/bees: 1-2 s beside the final score)
# Once per phase, inside fit, beyond the train graph the probe times: the validation graph, the input pipeline,
# the end of fit. Ants/bees at 96 px end to end: the first epoch is 3 s slower than the others, the last ends late.
SETUP_SECONDS = {CACHED: 0.5, END_TO_END: 3.0}
DECODE_SECONDS = 0.003  # per image, decoding and resizing on the thread pool (ants/bees: 1-2 ms)
STEP_SECONDS = 0.004  # per batch: Keras' step and callbacks, beyond the arithmetic
EPOCH_SECONDS = 0.05  # per epoch: starting validation, logging
AUGMENT_SECONDS_PER_MEGAPIXEL = 0.15  # per training image and epoch: flip + rotation took 2 ms at 96 px, 14 at 224
OPTIMIZER_SECONDS_PER_PARAM = 4e-9  # per batch and trainable weight: the optimizer's update (vgg-fc: 0.5 s)
MIN_CALIBRATION_SECONDS = 3.0  # a run whose predicted fit time is shorter is mostly fixed overhead: no correction
# A run corrects the fit time by at most this factor either way. With fit costs measured here, the model's own
# error stayed within 25 % (benchmarks/estimate_error.py on a quiet machine); runs that shared the 2 cores with
# other work measured 1.6-3.4x, which says how busy the server was then, not how the next run will go.
MAX_CORRECTION = 1.5
_lock = threading.Lock()
_submit_lock = threading.Lock()

# Multiply-accumulates of each VGG16 convolution at 224 px, in GMAC (they all scale with the pixel count).
CONV_GMAC = {
    "block1_conv1": 0.087, "block1_conv2": 1.850,
    "block2_conv1": 0.925, "block2_conv2": 1.850,
    "block3_conv1": 0.925, "block3_conv2": 1.850, "block3_conv3": 1.850,
    "block4_conv1": 0.925, "block4_conv2": 1.850, "block4_conv3": 1.850,
    "block5_conv1": 0.462, "block5_conv2": 0.462, "block5_conv3": 0.462,
}  # fmt: skip
_TOTAL_GMAC = sum(CONV_GMAC.values())
_STOCHASTIC = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout")


# ---------------------------------------------------------------------------------------------- the file


def _path() -> Path:
    return cache_dir() / FILE


def _read() -> dict[str, Any]:
    """The file as {"auto": ..., "forward": {...}, "fit": {...}, "runs": {...}}; an old flat file is forward speeds."""
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}

    def speeds(table: Any) -> dict[str, float]:
        items = table.items() if isinstance(table, dict) else ()
        return {k: float(v) for k, v in items if "/" in k and isinstance(v, int | float) and v > 0}

    def records(table: Any) -> dict[str, dict]:
        return {k: v for k, v in table.items() if isinstance(v, dict)} if isinstance(table, dict) else {}

    # Format 1 was a flat {"float32/224": 4.0}: those are forward speeds.
    out: dict[str, Any] = {"forward": {**speeds(data), **speeds(data.get("forward"))}}
    out["fit"], out["runs"] = records(data.get("fit")), records(data.get("runs"))
    if isinstance(data.get("auto"), str):
        out["auto"] = data["auto"]
    return out


@contextlib.contextmanager
def _update():
    """Read, change and write the file under a lock shared by every process; atomic; a no-op on a read-only folder."""
    with _lock:
        path = _path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_name(f".{FILE}.lock"), "a")  # noqa: SIM115  (held for the whole update)
        except OSError:
            yield _read()  # an estimate is a nicety: a read-only cache folder must not fail a run
            return
        with lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass  # no flock (Windows): threads are still serialised by _lock
            data = _read()
            yield data
            tmp = path.with_name(f".{FILE}.{os.getpid()}.{threading.get_ident()}")
            try:
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                tmp.replace(path)  # readers see the old file or the new one, never half of one
            except OSError:
                tmp.unlink(missing_ok=True)


def _key(image_size: int, precision: str) -> str:
    return f"{precision}/{image_size}"


def _resolved(precision: str, data: dict[str, Any]) -> str | None:
    """``auto`` as this machine resolved it when TensorFlow was loaded (None if never); other names as they are."""
    return data.get("auto") if precision == "auto" else precision


def _sizes(table: dict[str, Any], precision: str) -> list[tuple[int, Any]]:
    out = []
    for k, v in table.items():
        p, _, s = k.rpartition("/")
        if p == precision and s.isdigit():
            out.append((int(s), v))
    return out


def _nearest(table: dict[str, Any], precision: str, image_size: int, near: float | None) -> tuple[int, Any] | None:
    """The entry measured at the size closest to ``image_size`` (by ratio), if within ``near`` (None: any)."""
    sizes = _sizes(table, precision)
    if not sizes:
        return None
    size, value = min(sizes, key=lambda sv: abs(math.log(sv[0] / image_size)))
    if near is not None and max(size / image_size, image_size / size) > near:
        return None
    return size, value


def _resolve_now(precision: str) -> str | None:
    """``auto`` resolved: from the file, or by TensorFlow when this process has loaded it already."""
    if precision != "auto":
        return precision
    if resolved := _read().get("auto"):
        return resolved
    if "tensorflow" in sys.modules:
        from core.model import resolve_precision

        resolved = resolve_precision("auto")
        record_precision("auto", resolved)
        return resolved
    return None


def record_precision(requested: str, resolved: str) -> None:
    """Remember what ``auto`` means on this machine, so that a process without TensorFlow can look it up."""
    if requested != "auto" or resolved == "auto":
        return
    with _update() as data:
        data["auto"] = resolved


def record_speed(image_size: int, precision: str, images_per_second: float) -> None:
    """Remember a measured forward speed (images per second through every VGG16 convolution, compiled)."""
    if not images_per_second > 0 or not (resolved := _resolve_now(precision)):
        return
    with _update() as data:
        data["forward"][_key(image_size, resolved)] = round(float(images_per_second), 3)


def known_speed(image_size: int, precision: str) -> float | None:
    """The forward speed measured at this size, or at a size within ``NEAR`` scaled by pixel count; else None.

    ``precision`` may be ``auto``: it is found once any measurement here has resolved it. None means: measure
    (``measure_in_background``), since speeds far from the size asked for do not scale by pixel count.
    """
    data = _read()
    precision = _resolved(precision, data)
    hit = _nearest(data["forward"], precision, image_size, NEAR) if precision else None
    if hit is None:
        return None
    size, speed = hit
    return float(speed) * (size / image_size) ** 2


def fit_costs(image_size: int, precision: str) -> tuple[dict[str, float], bool]:
    """Keras fit's costs per image relative to the forward pass, from the probe at the nearest size measured here,
    and whether they were measured (else ``DEFAULT_FIT``)."""
    data = _read()
    precision = _resolved(precision, data)
    hit = _nearest(data["fit"], precision, image_size, None) if precision else None
    if hit is None or not isinstance(hit[1], dict):
        return dict(DEFAULT_FIT), False
    return {**DEFAULT_FIT, **{k: float(v) for k, v in hit[1].items() if k in DEFAULT_FIT}}, True


def _correction(data: dict[str, Any], kind: str, image_size: int, precision: str | None) -> tuple[float, int]:
    """(factor, runs) that finished runs of this kind near this size measured; (1.0, 0) when none did."""
    if not precision:
        return 1.0, 0
    runs = {k.removeprefix(f"{kind}/"): v for k, v in data["runs"].items() if k.startswith(f"{kind}/")}
    hit = _nearest(runs, precision, image_size, NEAR)
    if hit is None or not isinstance(hit[1], dict):
        return 1.0, 0
    return float(hit[1].get("factor", 1.0)), int(hit[1].get("runs", 0))


# ---------------------------------------------------------------------------------------------- the model of a run


@dataclass
class PhasePlan:
    """What one phase of a run computes, known from the layer table alone (as ``core.features.plan_training``)."""

    path: str  # CACHED or END_TO_END
    reason: str
    prefix_share: float  # share of the convolutions' work in the frozen prefix computed once (cached path)
    run_share: float  # share the fit runs every epoch: all of it end to end, the tail's on the cached path
    back_share: float  # share that trains (forward and backward): from the first trainable layer on
    trainable_params: int
    epochs: int


def _share(names: list[str]) -> float:
    return sum(CONV_GMAC.get(n, 0.0) for n in names) / _TOTAL_GMAC


def plan_phase(rows: list[dict], unfrozen: list[str], augmented: bool, epochs: int = 0) -> PhasePlan:
    """The path a phase takes and the work in it: ``rows`` is the layer table, ``unfrozen`` the layers that train.

    As ``core.features.plan_training``: the frozen prefix ends at the first layer that trains (and has weights)
    or that is random in training (Dropout); it is computed once unless augmentation changes the images or no
    layer in it has weights.
    """
    trains = set(unfrozen)
    names = [r["name"] for r in rows]
    cut = next(
        (i for i, r in enumerate(rows) if (r["name"] in trains and r["params"]) or r["type"] in _STOCHASTIC),
        len(rows),
    )
    first = next((i for i, r in enumerate(rows) if r["name"] in trains and r["params"]), len(rows))
    back = _share(names[first:])
    params = sum(r["params"] for r in rows if r["name"] in trains)
    if augmented:
        reason = (
            "Training end to end: augmentation changes every image, so the frozen layers' outputs cannot be "
            "computed once and reused."
        )
        return PhasePlan(END_TO_END, reason, 0.0, 1.0, back, params, epochs)
    if cut <= 2 or not any(r["params"] for r in rows[:cut]):
        reason = "Training end to end: no layer before the trainable ones is frozen."
        return PhasePlan(END_TO_END, reason, 0.0, 1.0, back, params, epochs)
    frozen = sum(1 for r in rows[:cut] if r["params"])
    reason = (
        f"Fast path: the first {cut} layers ({frozen} with weights, up to '{names[cut - 1]}') are frozen, so each "
        f"image goes through them once and only the last {len(rows) - cut} layers train on the result."
    )
    prefix = _share(names[:cut])
    return PhasePlan(CACHED, reason, prefix, 1.0 - prefix, back, params, epochs)


def run_phases(config: TrainConfig, unfrozen: list[str] | None = None) -> list[PhasePlan]:
    """The phases of a run as ``core.training.phases`` runs them; ``unfrozen`` (default: the last ``unfreeze``
    layers) names the layers that train in its only phase, or in phase 2 of a two-phase run."""
    rows = layer_table(config.head, config.image_size, 2)
    names = [r["name"] for r in rows]
    last = names[len(names) - min(config.unfreeze, len(names)) :]
    unfrozen = last if unfrozen is None else list(unfrozen)
    if not config.two_phase:
        return [plan_phase(rows, unfrozen, config.augmented, config.epochs)]
    head_only = names[len(names) - HEAD_LAYERS[config.head] :]
    return [
        plan_phase(rows, head_only, config.augmented, config.epochs),
        plan_phase(rows, unfrozen, config.augmented, config.fine_tune_epochs),
    ]


def _kind(phase: PhasePlan, augmented: bool) -> str:
    """The kind of run a correction is kept for: its path, augmentation, and whether convolutions train."""
    return (AUGMENTED if augmented else phase.path) + (FROZEN if phase.back_share == 0 else "")


@dataclass
class _Parts:
    prepare: float = 0.0  # decoding, feature passes
    trace: float = 0.0  # once per phase: Keras building its graphs, the input pipeline
    fit: float = 0.0  # epochs: what a finished run's fit time corrects
    final: float = 0.0  # building, the final score, saving


def _parts(
    phases: list[PhasePlan], config: TrainConfig, n_train: int, n_val: int, speed: float, fit: dict[str, float]
) -> list[_Parts]:
    """Seconds of each phase, uncorrected. Work is counted in compiled forward passes through every convolution."""
    n = n_train + n_val
    out = []
    decoded = False
    for ph in phases:
        p = _Parts()
        if ph.path == CACHED:  # decoding overlaps the feature pass; the slower of the two sets the pace
            p.prepare = n * max(ph.prefix_share / speed, DECODE_SECONDS)
        elif not decoded:  # end-to-end phases decode every image once, then share them
            p.prepare, decoded = n * DECODE_SECONDS, True
        # Frozen layers inside the fit run forward only (at fit's pace); the trainable ones forward and back.
        train = fit["fit_forward"] * (ph.run_share - ph.back_share) + fit["train_all"] * ph.back_share
        val = fit["test"] * ph.run_share
        steps = math.ceil(n_train / config.batch_size)
        per_epoch = (n_train * train + n_val * val) / speed + EPOCH_SECONDS
        if config.augmented:  # the input pipeline's transforms share the cores with the model
            per_epoch += n_train * AUGMENT_SECONDS_PER_MEGAPIXEL * config.image_size**2 / 1e6
        per_epoch += steps * (STEP_SECONDS + OPTIMIZER_SECONDS_PER_PARAM * ph.trainable_params)
        p.fit = ph.epochs * per_epoch
        p.trace = ph.back_share * fit["trace_train"] + fit["trace_frozen"] + SETUP_SECONDS[ph.path]
        out.append(p)
    out[-1].final = n_val * fit["test"] * phases[-1].run_share / speed + FIXED_SECONDS  # the final score, saving
    return out


@dataclass
class Estimate:
    seconds: float  # the run as configured
    cached_seconds: float  # the same run without augmentation (frozen-layer outputs computed once where it can)
    text: str  # "about 3:20 min for 2 epochs of 245 training images (this server: ...)"
    path: str = ""  # the (last) phase's path: CACHED or END_TO_END, as metrics["path"] will say
    reason: str = ""  # why, in the words the run itself will use
    prepare_seconds: float = 0.0  # decoding the images, or the frozen layers' pass (a cold cache: the longest)
    fit_seconds: float = 0.0  # the rest: building the graphs, the epochs, the final score, saving
    calibrated_runs: int = 0  # finished runs here that corrected the fit time (0: the speed probe alone)
    speed: float = 0.0  # the forward speed it started from


def estimate(
    config: TrainConfig,
    n_train: int,
    n_val: int,
    speed: float | None = None,
    unfrozen: list[str] | None = None,
    calibrate: bool = True,
) -> Estimate:
    """Time of a run from this server's measurements, for every kind of run.

    Args:
        config: the run's options (precision ``auto`` is fine: no TensorFlow is loaded).
        n_train, n_val: the split's sizes.
        speed: the forward speed (``known_speed``); None looks it up.
        unfrozen: the layers that train (in phase 2 of a two-phase run), as the page's layer table names them;
            None takes the last ``config.unfreeze`` layers.
        calibrate: apply the correction measured by finished runs (False: the speed probe's model alone).

    Returns:
        An ``Estimate``; a cold feature cache is assumed (a warm one skips the frozen layers' pass).

    Raises:
        ValueError: no speed given and none measured near this size (``measure_in_background`` first).
    """
    speed = speed or known_speed(config.image_size, config.precision)
    if not speed:
        raise ValueError(
            f"No speed measured near {config.image_size} px in {config.precision}. Received: speed={speed!r}"
        )
    data = _read()
    precision = _resolved(config.precision, data)
    fit, _ = fit_costs(config.image_size, config.precision)

    def total(augmented: bool) -> tuple[float, list[PhasePlan], list[_Parts], int]:
        cfg = config if augmented == config.augmented else _without_augmentation(config)
        phases = run_phases(cfg, unfrozen)
        parts = _parts(phases, cfg, n_train, n_val, speed, fit)
        runs = 0
        for ph, p in zip(phases, parts, strict=True):
            factor, count = _correction(data, _kind(ph, augmented), config.image_size, precision)
            if calibrate and count:
                p.fit *= factor
                runs = max(runs, count)
        return sum(p.prepare + p.trace + p.fit + p.final for p in parts), phases, parts, runs

    seconds, phases, parts, runs = total(config.augmented)
    cached_seconds = total(False)[0] if config.augmented else seconds
    text = (
        f"about {human_time(seconds)} for {config.total_epochs} epochs of {n_train:,} training images "
        f"(this server: {speed:.1f} images/s through VGG16 at {config.image_size} px"
        + (f", corrected by {runs} earlier run{'s' * (runs > 1)}" if runs else "")
        + ")"
    )
    return Estimate(
        seconds=seconds,
        cached_seconds=cached_seconds,
        text=text,
        path=phases[-1].path,
        reason=phases[-1].reason,
        prepare_seconds=sum(p.prepare for p in parts),
        fit_seconds=sum(p.trace + p.fit + p.final for p in parts),
        calibrated_runs=runs,
        speed=speed,
    )


def _without_augmentation(config: TrainConfig) -> TrainConfig:
    import dataclasses

    off = {f.name: (False if f.name == "augment_flip" else 0.0) for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in off.items() if k.startswith("augment_")})


def record_run_pace(config: TrainConfig, metrics: dict[str, Any], status: str = "completed") -> None:
    """Correct later estimates with a finished run's measured fit time (``metrics`` as ``core.training`` saves it).

    The correction is kept per kind of run (cached features, end to end, end to end augmented; each with
    convolutions training or all frozen), size and precision, as the ratio of the measured fit time to the one
    predicted from the speed measurements; later runs average into it. A stopped run, a run whose fit is mostly
    fixed overhead, a two-phase run whose phases are of different kinds, or one without a speed measured near its
    size corrects nothing.
    """
    fit_seconds = metrics.get("fit_seconds")
    resolved = metrics.get("precision") or _resolve_now(config.precision)
    if resolved:
        record_precision(config.precision, resolved)  # what auto means here, for the page: from any run
    if status != "completed" or not fit_seconds or not resolved:
        return
    speed = known_speed(config.image_size, resolved)
    n_train, n_val = int(metrics.get("train_images") or 0), int(metrics.get("val_images") or 0)
    if not speed or not n_train:
        return
    phases = run_phases(config)
    done = [p.get("epochs_completed", 0) for p in metrics.get("phases", [])] or [metrics.get("epochs_completed", 0)]
    for ph, epochs in zip(phases, done, strict=False):
        ph.epochs = int(epochs)
    phases = phases[: len(done)]
    kinds = {_kind(ph, config.augmented) for ph in phases}
    epochs = sum(ph.epochs for ph in phases)
    if len(kinds) != 1 or not epochs:
        return
    fit, _ = fit_costs(config.image_size, resolved)
    parts = _parts(phases, config, n_train, n_val, speed, fit)
    predicted = sum(p.fit for p in parts)
    measured = float(fit_seconds) - sum(p.trace for p in parts)
    if predicted < MIN_CALIBRATION_SECONDS or measured <= 0:
        return
    factor = min(max(measured / predicted, 1 / MAX_CORRECTION), MAX_CORRECTION)
    key = f"{kinds.pop()}/{_key(config.image_size, resolved)}"
    with _update() as data:
        old = data["runs"].get(key) if isinstance(data["runs"].get(key), dict) else {}
        runs = int(old.get("runs", 0))
        if runs:  # a running average in log space: recent runs count most, one odd run does not swing it
            factor = math.exp(0.5 * math.log(float(old.get("factor", 1.0))) + 0.5 * math.log(factor))
        data["runs"][key] = {
            "factor": round(factor, 4),
            "runs": runs + 1,
            "seconds_per_image_epoch": round(float(fit_seconds) / (epochs * (n_train + n_val)), 5),
        }


# ---------------------------------------------------------------------------------------------- measuring


def _best_seconds(fn, repeats: int = 2, enough: float = 2.0, each=None) -> float:
    """The fastest of ``repeats`` calls; one call that takes ``enough`` seconds is trusted alone. ``each()`` runs
    after every call."""
    times: list[float] = []
    while len(times) < repeats and sum(times) < enough:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if each is not None:
            each()
    return min(times)


def probe_images(image_size: int) -> int:
    return PROBE_IMAGES if image_size <= 128 else PROBE_IMAGES // 2  # half a minute at 224 px on 2 idle cores


def probe_batches(fit: bool = True) -> int:
    """Batches the probe runs at most: a first (compiling) one and two timed ones for the forward pass, and as many
    for each of the training step with every layer training, with only the head, and the validation step."""
    return 3 * (4 if fit else 1)


def measure_speed(
    image_size: int,
    precision: str,
    images: int | None = None,
    fit: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> float:
    """Time VGG16 here (random weights: the cost is the same), record it and return the forward speed.

    The forward speed is the compiled inference pass of every convolution (what a feature pass runs). With
    ``fit``, Keras' training step is timed too, with every layer training and with only the head training, and
    its validation step, each relative to the forward pass: what end-to-end epochs cost at this size.
    ``progress(STAGE, done, total)`` hears of every batch (``total`` is ``probe_batches(fit)``); ``stop`` is
    looked at between batches and ends the probe with ``Cancelled``, recording nothing.
    This loads TensorFlow; a process that must not (the web page) runs ``measure_in_background`` instead.
    """
    total, done = probe_batches(fit), -1

    def tick(upto: int | None = None) -> None:
        """One more batch done (or every batch up to ``upto``, when a timing needed fewer calls)."""
        nonlocal done
        if stop is not None and stop.is_set():
            raise Cancelled("The speed test was stopped; nothing was recorded.")
        now = done + 1 if upto is None else upto
        if now != done:
            done = now
            if progress is not None:
                progress(STAGE, done, total)

    tick(0)  # the clock of the progress's time left starts before TensorFlow loads, which is part of the wait
    import numpy as np

    from core.features import compiled
    from core.model import _vgg16, build_model, compile_model, dtype_policy, freeze, resolve_precision

    images = images or probe_images(image_size)
    resolved = resolve_precision(precision)
    record_precision(precision, resolved)
    with dtype_policy(resolved):
        base = _vgg16(False, None, image_size)
    run = compiled(base)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (images, image_size, image_size, 3)).astype("uint8")
    floats = batch.astype("float32") - 120.0
    run(floats)  # compile and warm up
    tick()
    speed = images / _best_seconds(lambda: run(floats).numpy(), each=tick)
    tick(3)
    if not fit:
        record_speed(image_size, resolved, speed)
        return speed

    config = TrainConfig(weights="none", head="gap", image_size=image_size, unfreeze=10**6, optimizer="adam",
                         learning_rate=1e-6, decay=0.0, batch_size=images, precision=resolved)  # fmt: skip
    model = build_model(config, 2)
    labels = np.eye(2, dtype="float32")[np.arange(images) % 2]
    costs = {}
    for n, (name, unfreeze) in enumerate((("train_all", 10**6), ("fit_forward", HEAD_LAYERS["gap"])), start=1):
        freeze(model, unfreeze)
        compile_model(model, config)
        start = time.perf_counter()
        model.train_on_batch(batch, labels)  # builds the train graph
        first = time.perf_counter() - start
        tick()
        step = _best_seconds(lambda: model.train_on_batch(batch, labels), each=tick)
        tick(3 + 3 * n)
        costs[name] = step / images * speed
        costs["trace_train" if name == "train_all" else "trace_frozen"] = max(first - step, 0.0)
    model.test_on_batch(batch, labels)
    tick()
    costs["test"] = _best_seconds(lambda: model.test_on_batch(batch, labels), each=tick) / images * speed
    tick(total)
    with _update() as data:  # both at once: a reader that sees the speed sees the fit costs measured with it
        data["forward"][_key(image_size, resolved)] = round(speed, 3)
        data["fit"][_key(image_size, resolved)] = {k: round(v, 4) for k, v in costs.items()}
    return speed


# ---------------------------------------------------------------------------------------------- the probe as a job


def _near(size: Any, image_size: int) -> bool:
    return isinstance(size, int) and size > 0 and max(size / image_size, image_size / size) <= NEAR


def _probes(image_size: int, precision: str, registry: jobs.JobRegistry | None, recent: float) -> list:
    """Speed tests in this precision at this size or one within ``NEAR`` (whose speed stands in for it, as in
    ``known_speed``), the closest size first: queued and running ones, and those finished within ``recent`` s."""
    found = [
        j
        for j in (registry or jobs.registry()).jobs(recent=recent)
        if j.kind == jobs.SPEED and j.params.get("precision") == precision
        and _near(j.params.get("image_size"), image_size)
    ]  # fmt: skip
    return sorted(found, key=lambda j: abs(math.log(j.params["image_size"] / image_size)))


def probe(image_size: int, precision: str, registry: jobs.JobRegistry | None = None) -> jobs.JobSnapshot | None:
    """The speed test queued or running for this size (or one near it) and precision, read from the jobs table."""
    pending = [j for j in _probes(image_size, precision, registry, 0.0) if not j.finished]
    return pending[0] if pending else None


def measuring(image_size: int, precision: str, registry: jobs.JobRegistry | None = None) -> bool:
    """Whether a speed test for this size (or one near it) and precision is queued or running, on any server
    process that shares this workspace."""
    return probe(image_size, precision, registry) is not None


def measure_in_background(
    image_size: int,
    precision: str,
    *,
    owner: str = "",
    images: int | None = None,
    registry: jobs.JobRegistry | None = None,
) -> jobs.JobSnapshot | None:
    """Queue the speed probe as a job (``core.jobs.SPEED``) and return it at once; ``known_speed`` has the answer
    when it ends (about 10-40 s once it has a slot).

    The job waits for a free slot like a training (it would distort a running one, and be distorted by it),
    shows on the Jobs page under ``owner``, and loads TensorFlow in its worker, never here. A speed test already
    queued or running for this size (or one near it) and precision is returned instead of a new one; after one
    that ended without a speed (failed, stopped, or its speed could not be saved) this returns None for
    ``RETRY_AFTER`` seconds. ``registry``: the one to queue on, default this process's.
    """
    with _submit_lock:  # two script runs of this process asking at once queue one probe
        found = _probes(image_size, precision, registry, RETRY_AFTER)
        if pending := [j for j in found if not j.finished]:
            return pending[0]
        if found:
            return None
        params = {"image_size": image_size, "precision": precision, **({"images": images} if images else {})}
        return (registry or jobs.registry()).submit_task(jobs.SPEED, params, owner=owner)


def describe(image_size: int, precision: str) -> str:
    """One line on what is measured here at this size: for the command line."""
    data = _read()
    resolved = _resolved(precision, data) or precision
    speed = data["forward"].get(_key(image_size, resolved))
    costs = data["fit"].get(_key(image_size, resolved)) or {}
    line = f"{resolved} at {image_size} px: {speed:.1f} images/s through VGG16's convolutions" if speed else ""
    if costs.get("train_all") and speed:
        line += (
            f"; training every layer {speed / costs['train_all']:.1f} images/s, only the head "
            f"{speed / costs['fit_forward']:.1f} images/s"
        )
    return line or f"nothing measured at {image_size} px in {resolved}"


def human_time(seconds: float) -> str:
    """12 s, 3:20 min, 1:05 h: the same style as the progress bars' ETA."""
    s = max(round(seconds), 1)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d} min"
    return f"{s // 3600}:{s % 3600 // 60:02d} h"
