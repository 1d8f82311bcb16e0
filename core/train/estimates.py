"""How long a run will take on this server, told before it starts, for every kind of run (no TensorFlow).

    est = estimate(config, n_train=245, n_val=153, speed=known_speed(96, "auto"), unfrozen=[...])
    est.seconds, est.path, est.text      # the whole run, the path it takes, one sentence for the user
    record_run_pace(config, result.metrics)   # after a run: its measured fit time corrects later estimates

The model of a run counts its work in compiled forward passes through VGG16's convolutions (``CONV_GMAC``), at the
forward speed and fit costs measured here (``core.train.pace``); each phase takes the path ``core.train.phases``
decides from VGG16's layer table, the same rule the training applies to the built model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from core.config import TrainConfig
from core.model.vgg16 import layer_table
from core.train import pace
from core.train.pace import fit_costs, known_speed, record_precision
from core.train.phases import CACHED, END_TO_END, STOCHASTIC, Layer, decide, phases
from core.util.text import human_time

AUGMENTED = "end to end, augmented"  # a kind of run for the correction: augmentation has a cost of its own
FROZEN = ", convolutions frozen"  # ... and so has a fit that runs the convolutions forward only
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

# Multiply-accumulates of each VGG16 convolution at 224 px, in GMAC (they all scale with the pixel count).
CONV_GMAC = {
    "block1_conv1": 0.087, "block1_conv2": 1.850,
    "block2_conv1": 0.925, "block2_conv2": 1.850,
    "block3_conv1": 0.925, "block3_conv2": 1.850, "block3_conv3": 1.850,
    "block4_conv1": 0.925, "block4_conv2": 1.850, "block4_conv3": 1.850,
    "block5_conv1": 0.462, "block5_conv2": 0.462, "block5_conv3": 0.462,
}  # fmt: skip
_TOTAL_GMAC = sum(CONV_GMAC.values())


@dataclass
class PhasePlan:
    """What one phase of a run computes, known from the layer table alone (as ``core.train.features.plan_training`` on
    the model)."""

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
    """The path a phase takes and the work in it: ``rows`` is the layer table, ``unfrozen`` the layers that train
    (the path by ``core.train.phases.decide``, as the training decides it on the built model)."""
    trains = set(unfrozen)
    names = [r["name"] for r in rows]
    facts = [Layer(r["name"], bool(r["params"]), r["name"] in trains and bool(r["params"]), r["type"] in STOCHASTIC)
             for r in rows]  # fmt: skip
    d = decide(facts, augmented)
    first = next((i for i, f in enumerate(facts) if f.trains), len(rows))
    back = _share(names[first:])
    params = sum(r["params"] for r in rows if r["name"] in trains)
    if not d.cached:
        return PhasePlan(END_TO_END, d.reason, 0.0, 1.0, back, params, epochs)
    prefix = _share(names[: d.cut])
    return PhasePlan(CACHED, d.reason, prefix, 1.0 - prefix, back, params, epochs)


def run_phases(config: TrainConfig, unfrozen: list[str] | None = None) -> list[PhasePlan]:
    """The phases of a run as ``core.train.phases.phases`` gives them; ``unfrozen`` (default: the last
    ``unfreeze`` layers) names the layers that train in its only phase, or in phase 2 of a two-phase run."""
    rows = layer_table(config.head, config.image_size, 2)
    names = [r["name"] for r in rows]
    planned = phases(config)
    out = []
    for n, ph in enumerate(planned):
        last = names[len(names) - min(ph.unfreeze, len(names)) :]
        trains = list(unfrozen) if unfrozen is not None and n == len(planned) - 1 else last
        out.append(plan_phase(rows, trains, config.augmented, ph.epochs))
    return out


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
        ValueError: no speed given and none measured near this size (``core.jobs.probes.measure_in_background`` first).
    """
    speed = speed or known_speed(config.image_size, config.precision)
    if not speed:
        raise ValueError(
            f"No speed measured near {config.image_size} px in {config.precision}. Received: speed={speed!r}"
        )
    data = pace.read()
    precision = pace.resolved_precision(config.precision, data)
    fit, _ = fit_costs(config.image_size, config.precision)

    def total(augmented: bool) -> tuple[float, list[PhasePlan], list[_Parts], int]:
        cfg = config if augmented == config.augmented else _without_augmentation(config)
        phases = run_phases(cfg, unfrozen)
        parts = _parts(phases, cfg, n_train, n_val, speed, fit)
        runs = 0
        for ph, p in zip(phases, parts, strict=True):
            factor, count = pace.correction(data, _kind(ph, augmented), config.image_size, precision)
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
    off = {f.name: (False if f.name == "augment_flip" else 0.0) for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in off.items() if k.startswith("augment_")})


def record_run_pace(config: TrainConfig, metrics: dict[str, Any], status: str = "completed") -> None:
    """Correct later estimates with a finished run's measured fit time (``metrics`` as ``core.train.training`` saves
    it).

    The correction is kept per kind of run (cached features, end to end, end to end augmented; each with
    convolutions training or all frozen), size and precision, as the ratio of the measured fit time to the one
    predicted from the speed measurements; later runs average into it. A stopped run, a run whose fit is mostly
    fixed overhead, a two-phase run whose phases are of different kinds, or one without a speed measured near its
    size corrects nothing.
    """
    fit_seconds = metrics.get("fit_seconds")
    resolved = metrics.get("precision") or pace.resolve_now(config.precision)
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
    key = f"{kinds.pop()}/{pace.key(config.image_size, resolved)}"
    with pace.update() as data:
        old = data["runs"].get(key) if isinstance(data["runs"].get(key), dict) else {}
        runs = int(old.get("runs", 0))
        if runs:  # a running average in log space: recent runs count most, one odd run does not swing it
            factor = math.exp(0.5 * math.log(float(old.get("factor", 1.0))) + 0.5 * math.log(factor))
        data["runs"][key] = {
            "factor": round(factor, 4),
            "runs": runs + 1,
            "seconds_per_image_epoch": round(float(fit_seconds) / (epochs * (n_train + n_val)), 5),
        }
