"""Probabilities you can trust: temperature scaling, calibration error, and the "not sure" threshold.

    t = fit_temperature(val_probs, val_labels)           # one scalar, minimising the validation NLL
    ece(rescale(val_probs, t), val_labels)                # expected calibration error, 15 equal-width bins
    choice = choose_threshold(rescale(val_probs, t), val_labels, target=0.95)
    choice.threshold, choice.coverage, choice.accuracy   # answer only above it: "answers 82 %, 95 % of those right"
    save(run_dir, report) / load(run_dir) / set_threshold(run_dir, 0.7)

Networks fine-tuned this way are overconfident (Guo et al., ICML 2017); dividing the logits by one temperature
fitted on validation fixes most of it without changing a single prediction (the order of the classes is kept).
The saved model carries the temperature in its weights: the last layer's kernel and bias are divided by it, since
``softmax((Wx + b) / T) == softmax((W / T) x + b / T)``. So Classify, the CLI, evaluation and any export give
calibrated probabilities with no extra layer, and a model saved before calibration existed still loads and works.
What was fitted, the error before and after, and the threshold live in ``<run>/calibration.json``.

Pure numpy (and scipy's scalar minimiser): no TensorFlow, so pages can import it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from core.util.errors import UserError
from core.workspace import access, runs

FILE = "calibration.json"
FORMAT = 1
BINS = 15  # Guo et al.'s 15 equal-width confidence bins
TARGET = 0.95  # the accepted answers' accuracy the default threshold must reach on validation
MIN_IMAGES = 10  # fewer validation images than this say nothing about a temperature or a threshold
T_RANGE = (0.05, 20.0)  # a temperature outside this range means the validation split is degenerate
EPS = 1e-12
CURVE_POINTS = 200  # points kept of the accuracy-versus-coverage curve


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must have shape (n, classes) with n = len(labels). Received: shape={p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be class indices 0-{p.shape[1] - 1}. Received: {y.min()}-{y.max()}")
    return p, y


def rescale(probs, temperature: float) -> np.ndarray:
    """The probabilities a model would give with its logits divided by ``temperature``.

    ``log(p)`` is the logits up to a constant per row, which softmax ignores, so this is exact.
    """
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or p.size == 0:
        return p
    z = np.log(np.clip(p, EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs, labels) -> float:
    """Mean negative log-likelihood of the true classes."""
    p, y = _check(probs, labels)
    return float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)))) if len(y) else 0.0


def reliability(probs, labels, bins: int = BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its bounds, how many images fall in it, their mean confidence and accuracy."""
    p, y = _check(probs, labels)
    conf, right = p.max(axis=1), p.argmax(axis=1) == y
    # A confidence of exactly 1 belongs to the last bin, not to a bin of its own.
    which = np.minimum((conf * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": n,
                "confidence": float(conf[mask].mean()) if n else 0.0,
                "accuracy": float(right[mask].mean()) if n else 0.0,
            }
        )
    return rows


def ece(probs, labels, bins: int = BINS) -> float:
    """Expected calibration error: the mean gap between confidence and accuracy, each bin weighted by its images."""
    rows = reliability(probs, labels, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / total) if total else 0.0


def fit_temperature(probs, labels) -> float:
    """The temperature minimising the NLL of ``rescale(probs, T)`` on these images (a 1-D convex problem in 1/T)."""
    p, y = _check(probs, labels)
    if not len(y):
        raise ValueError("there must be at least one image. Received: labels=[]")
    logp = np.log(np.clip(p, EPS, 1.0))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    low, high = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    best = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    # The bounded search stops near, not at, T = 1 when nothing helps: keep the model unchanged then.
    t = math.exp(best.x)
    return t if loss(best.x) < loss(0.0) - 1e-9 else 1.0


# ---------------------------------------------------------------------------------------------- "not sure"


@dataclass
class Choice:
    threshold: float | None  # None: no threshold reaches the target; every answer is given
    coverage: float  # share of the images answered at this threshold
    accuracy: float  # accuracy of the answered ones
    target: float = TARGET


def coverage_curve(probs, labels) -> list[dict[str, float]]:
    """Accuracy of the answers against the share answered, for every threshold worth trying (most sure first).

    Each point is {"threshold", "coverage", "accuracy"}: answering only when the top probability is at least
    ``threshold`` answers ``coverage`` of the images, and ``accuracy`` of those are right. At most ``CURVE_POINTS``
    points, always including both ends.
    """
    p, y = _check(probs, labels)
    if not len(y):
        return []
    conf, right = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    # A threshold answers every image at or above it, so equal confidences go together: keep each run's last.
    last = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))
    answered = last + 1
    accuracy = np.cumsum(right)[last] / answered
    points = [
        {"threshold": float(conf[i]), "coverage": float(answered[k] / len(y)), "accuracy": float(accuracy[k])}
        for k, i in enumerate(last)
    ]
    if len(points) > CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(points) - 1, CURVE_POINTS).round().astype(int))
        points = [points[i] for i in keep]
    return points


def at_threshold(probs, labels, threshold: float | None) -> tuple[float, float]:
    """(coverage, accuracy of the answered) when answering only at or above ``threshold`` (None: all)."""
    p, y = _check(probs, labels)
    conf = p.max(axis=1)
    answered = conf >= threshold if threshold is not None else np.ones(len(y), bool)
    n = int(answered.sum())
    right = (p.argmax(axis=1) == y)[answered]
    return (n / len(y) if len(y) else 0.0), (float(right.mean()) if n else 0.0)


def choose_threshold(probs, labels, target: float = TARGET, min_answered: int = MIN_IMAGES) -> Choice:
    """The lowest confidence threshold at which the answered images reach ``target`` accuracy.

    Lowest, so as many images as possible are answered. When the model is that good everywhere the threshold is the
    least confidence seen (everything answered); when no threshold reaches the target it is None, and every answer
    is given (a user can still pick one on the Evaluate page). A threshold must leave at least ``min_answered``
    images answered (all of them when there are fewer): one lucky image right out of one says nothing.
    """
    p, y = _check(probs, labels)
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1]. Received: target={target}")
    conf, right = p.max(axis=1), p.argmax(axis=1) == y
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    last = np.flatnonzero(np.append(conf[1:] != conf[:-1], True)) if len(y) else np.array([], int)
    accuracy = np.cumsum(right)[last] / (last + 1) if len(y) else np.array([])
    enough = (last + 1) >= min(min_answered, len(y)) if len(y) else np.array([], bool)
    reaching = np.flatnonzero((accuracy >= target - 1e-12) & enough)
    if not len(reaching):
        cov, acc = at_threshold(p, y, None)
        return Choice(None, cov, acc, target)
    k = reaching[-1]  # the most images answered: the lowest threshold
    return Choice(float(conf[last[k]]), float((last[k] + 1) / len(y)), float(accuracy[k]), target)


def in_words(threshold: float | None, coverage: float, accuracy: float, where: str = "validation") -> str:
    """'Answers 82 % of the validation images above 71 % confidence; 95 % of those are right.'"""
    where = {"val": "validation"}.get(where, where)
    if threshold is None:
        return f"Answers every image; {accuracy:.0%} of the {where} images are right."
    if coverage == 0:
        return f"Answers none of the {where} images: none reaches {threshold:.0%} confidence."
    return (
        f"Answers {coverage:.0%} of the {where} images (those at {threshold:.0%} confidence or more); "
        f"{accuracy:.0%} of those are right. Below it the answer is “not sure”."
    )


# ---------------------------------------------------------------------------------------------- a run's record


@dataclass
class Report:
    """``calibration.json``: what was fitted on which images, and the threshold in force."""

    temperature: float = 1.0  # folded into the saved model's last layer; 1.0: not calibrated
    calibrated: bool = False
    reason: str = ""  # why not calibrated, when not
    split: str = "validation"
    images: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    reliability_before: list[dict[str, float]] = field(default_factory=list)
    reliability_after: list[dict[str, float]] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)  # on the calibrated probabilities
    target: float = TARGET
    threshold: float | None = None  # "not sure" below it; None: always answer
    coverage: float | None = None
    accepted_accuracy: float | None = None
    threshold_source: str = "validation"  # "validation": chosen for ``target``; "user": set on the Evaluate page
    updated: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """One or two sentences for the CLI and the pages."""
        parts = []
        if self.calibrated:
            parts.append(
                f"Calibrated on {self.images} {self.split} images: temperature {self.temperature:.2f}, expected "
                f"calibration error {self.ece_before:.1%} → {self.ece_after:.1%}."
            )
        elif self.reason:
            parts.append(f"Not calibrated: {self.reason}")
        if self.coverage is not None:
            parts.append(in_words(self.threshold, self.coverage or 0.0, self.accepted_accuracy or 0.0, self.split))
        return " ".join(parts)


def calibrate(probs, labels, enabled: bool = True, target: float = TARGET) -> Report:
    """Fit the temperature (unless ``enabled`` is False or there are too few images) and choose the threshold."""
    p, y = _check(probs, labels)
    report = Report(images=len(y), target=target)
    if len(y):
        report.nll_before, report.ece_before = nll(p, y), ece(p, y)
        report.reliability_before = reliability(p, y)
    if not enabled:
        report.reason = "this run opted out (--no-calibrate)."
    elif len(y) < MIN_IMAGES:
        report.reason = f"only {len(y)} validation images; calibration needs at least {MIN_IMAGES}."
    else:
        report.temperature = fit_temperature(p, y)
        report.calibrated = True
        p = rescale(p, report.temperature)
    if len(y):
        report.nll_after, report.ece_after = nll(p, y), ece(p, y)
        report.reliability_after = reliability(p, y)
        report.curve = coverage_curve(p, y)
    if len(y) >= MIN_IMAGES:  # a threshold read off a handful of images would be noise
        choice = choose_threshold(p, y, target)
        report.threshold, report.coverage, report.accepted_accuracy = choice.threshold, choice.coverage, choice.accuracy
    report.updated = time.strftime("%Y-%m-%dT%H:%M:%S")
    return report


def on_images(probs, labels, temperature: float, threshold: float | None) -> dict[str, Any]:
    """How a run's (calibrated) probabilities do on other images, e.g. an evaluation's: the calibration error with
    and without the temperature, both reliability diagrams, the accuracy-versus-coverage curve, and what the
    threshold in force gives there."""
    p, y = _check(probs, labels)
    before = rescale(p, 1.0 / temperature)  # the model's own probabilities, as they were before calibration
    coverage, accuracy = at_threshold(p, y, threshold)
    return {
        "temperature": temperature,
        "ece_before": ece(before, y),
        "ece_after": ece(p, y),
        "nll_before": nll(before, y),
        "nll_after": nll(p, y),
        "reliability_before": reliability(before, y),
        "reliability_after": reliability(p, y),
        "curve": coverage_curve(p, y),
        "threshold": threshold,
        "coverage": coverage,
        "accepted_accuracy": accuracy,
    }


def save(run_dir: str | os.PathLike, report: Report) -> None:
    runs.write_json(Path(run_dir) / FILE, report.to_dict())


def load(run_dir: str | os.PathLike) -> Report | None:
    """The run's calibration record, or None for a run saved before calibration existed (or an unreadable one)."""
    path = Path(run_dir) / FILE
    try:
        return Report.from_dict(runs.read_json(path))
    except (OSError, ValueError, TypeError):
        return None


def threshold_of(run_dir: str | os.PathLike) -> float | None:
    report = load(run_dir)
    return report.threshold if report else None


def set_threshold(
    run_dir: str | os.PathLike,
    threshold: float | None,
    coverage: float | None = None,
    accuracy: float | None = None,
    user: str = access.GUEST,
) -> Report:
    """Save a threshold a user chose (None: always answer), with what it gives on the images it was read from.

    Only the run's owner or an admin may (``core.workspace.access``); a run trained without sign-in is everyone's.
    A run without a calibration record (saved before it existed) gets one with temperature 1.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"The threshold must be between 0 and 1 (got {threshold:g}).")
    run_dir = runs.check_run(run_dir)
    owner = str(runs.read_json(run_dir / runs.MARKER).get("owner") or "")
    access.check(user, owner, f"change the threshold of the run {run_dir.name}")
    report = load(run_dir) or Report(reason="the run was trained before calibration existed.")
    report.threshold, report.threshold_source = threshold, "user"
    report.coverage, report.accepted_accuracy = coverage, accuracy
    report.updated = time.strftime("%Y-%m-%dT%H:%M:%S")
    save(run_dir, report)
    return report
