"""The backbone bake-off: each backbone trained briefly on the user's own images and measured, side by side, with a
recommendation in words.

    result = bakeoff(dataset, ["mobilenet_v3_small", "vgg16"], TrainConfig(weights="none", image_size=64))
    result.rows                      # one dict per backbone, most accurate first (see ROW_FIELDS), or its error
    result.recommendation["text"]    # "mobilenet_v3_large is 1.2 points below vgg16 at 1/25 of the size and 9× faster"
    result.to_dict()                 # the job's result (JSON); Bakeoff.from_dict reads it back

Every backbone gets the same trial (``core.publish.trial``): the base config's weights, image size, resize,
precision, batch size, seed and split (the training's own: ``split_dataset``, its exclusions and duplicate check),
with a gap head on the frozen backbone (``backbone_config``), so its layers run once per image through the feature
cache a training uses (a second bake-off, or a training of the same frozen backbone, reads them back), and the head
alone trains: Adam at 1e-3 for up to ``EPOCHS`` epochs, stopping ``PATIENCE`` epochs after the best validation loss
and keeping that epoch's weights. Then its validation accuracy, float32 size and parameters, one image's latency
and, with ``int8``, the accuracy of its full-integer int8 LiteRT file on the same validation images.

A backbone whose ImageNet weights cannot be had, or whose trial fails, gets a row with the sentence as its ``error``;
the others go on. A stop (between backbones, or inside one: within one batch) ends the bake-off with the rows done
so far, marked ``stopped``.

The recommendation (``recommend``) follows ``RULE``. Importing this module does not load TensorFlow (``bakeoff``
does), so pages and the command line can check names and read results without it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.config import HEAD_LAYERS, TrainConfig
from core.data.dataset import Dataset
from core.model import backbones
from core.util.errors import Cancelled, UserError

log = logging.getLogger(__name__)

FORMAT = 1
HEAD, OPTIMIZER, LEARNING_RATE = "gap", "adam", 1e-3
EPOCHS, PATIENCE = 15, 3  # the head's most epochs, and the epochs without a better validation loss that end it
WITHIN = 0.01  # one point of accuracy
EPS = 1e-9  # "within 1 point" on numbers that went through floats
RULE = (
    "the smallest backbone (float32 parameter bytes; the faster among equals) whose validation accuracy is within 1 "
    "point of the most accurate one's: the most accurate itself when nothing smaller comes that close"
)
COMPLETED, STOPPED = "completed", "stopped"
ROW_FIELDS = (
    "backbone", "title", "val_accuracy", "int8_accuracy", "int8_size_mb", "int8_error", "size_mb", "params",
    "latency_ms", "latency_threads", "epochs", "feature_seconds", "feature_images_per_second", "fit_seconds",
    "seconds", "cache_hits", "cache_misses", "error",
)  # fmt: skip

Progress = Callable[[str, int, int], None]  # (stage, done, total): "backbone 2 of 6 (resnet50) · features", 120, 398


@dataclass
class Bakeoff:
    """What a bake-off found; ``to_dict``/``from_dict`` are the job's result."""

    rows: list[dict[str, Any]]  # most accurate first, rows with an error last
    status: str  # "completed" or "stopped"
    asked: list[str]  # the backbones asked for, in order
    recommendation: dict[str, str] | None  # {"backbone", "text", "rule"}; None when no backbone has a result
    dataset: str = ""
    image_size: int = 0
    weights: str = ""
    int8: bool = False
    train_images: int = 0
    val_images: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # what every trial shared: head, epochs, resize, ...
    created: str = ""
    seconds: float = 0.0

    @property
    def stopped(self) -> bool:
        return self.status == STOPPED

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bakeoff:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def metrics(self) -> dict[str, Any]:
        """The job's metrics: how many backbones have a result, and the one recommended."""
        rec = self.recommendation or {}
        scored = sum(r.get("val_accuracy") is not None for r in self.rows)
        return {"backbones": len(self.rows), "scored": scored, "recommended": rec.get("backbone")}


# ---------------------------------------------------------------------------------------------- the options


def check_names(names: Sequence[str] | None) -> list[str]:
    """The backbones to compare, each once, in the order given (none given: every one); a UserError naming the
    choices for an unknown one."""
    if not names:
        return list(backbones.NAMES)
    out: list[str] = []
    for name in names:
        if backbones.get(name).name not in out:  # UserError for an unknown name
            out.append(name)
    return out


def check_base(config: TrainConfig) -> TrainConfig:
    """The base config, checked; a weights file fits one backbone only, so it is refused."""
    config.validate()
    if config.weights not in ("imagenet", "none"):
        raise UserError(
            "The bake-off compares backbones with ImageNet or random weights; a weights file fits one backbone "
            "only: choose --weights imagenet or --weights none."
        )
    return config


def backbone_config(base: TrainConfig, name: str) -> TrainConfig:
    """What the bake-off trains on ``name``: ``base``'s weights, size, resize, precision, batch size, seed and
    split, with a gap head on the frozen backbone (VGG16 trains its last 3 layers: the gap head's), Adam, early
    stopping, one phase and no augmentation (which would forbid the feature cache)."""
    no_augmentation = {f.name: f.default for f in TrainConfig.describe("augmentation")}
    return dataclasses.replace(
        base, backbone=name, head=HEAD, unfreeze=HEAD_LAYERS[HEAD], unfreeze_blocks=0, fine_tune_epochs=0,
        optimizer=OPTIMIZER, learning_rate=LEARNING_RATE, decay=0.0, epochs=EPOCHS, early_stopping=PATIENCE,
        class_weight="none", **no_augmentation,
    ).validate()  # fmt: skip


# ---------------------------------------------------------------------------------------------- the bake-off


class _Steps:
    """The trials' ``report(step, done, total)``: the stop honoured (``Cancelled``), the step named with its
    backbone's place for ``progress``."""

    def __init__(self, progress: Progress | None, stop: threading.Event):
        self.progress, self.stop, self.prefix = progress, stop, ""

    def __call__(self, step: str, done: int, total: int) -> None:
        if self.stop.is_set():
            raise Cancelled("The bake-off was stopped.")
        if self.progress:
            self.progress(f"{self.prefix} · {step}" if self.prefix else step, done, total)


def empty_row(name: str) -> dict[str, Any]:
    return {**dict.fromkeys(ROW_FIELDS), "backbone": name, "title": backbones.get(name).title}


def bakeoff(
    dataset: Dataset,
    names: Sequence[str] | None = None,
    base_config: TrainConfig | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    int8: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    cache=None,
) -> Bakeoff:
    """Compare ``names`` (default: every backbone) on ``dataset`` (see the module's text); ``on_row(row)`` as each
    backbone's row is done.

    Raises:
        UserError: an unknown backbone, a weights file, options out of range, or a split without validation images.
    """
    names, base = check_names(names), check_base(base_config or TrainConfig())
    stop, started = stop or threading.Event(), time.monotonic()
    from core.publish import trial  # TensorFlow loads here, once the cheap checks have passed

    steps = _Steps(progress, stop)
    rows: list[dict[str, Any]] = []
    try:
        images = trial.split_images(dataset, backbone_config(base, names[0]), lambda d, t: steps("reading", d, t))
    except Cancelled:
        images = None
    for i, name in enumerate(names if images is not None else (), start=1):
        steps.prefix = f"backbone {i} of {len(names)} ({name})"
        try:
            if stop.is_set():
                raise Cancelled("The bake-off was stopped.")
            row = _trial(trial, name, backbone_config(base, name), images, steps, int8, cache)
        except Cancelled:
            break
        rows.append(row)
        if on_row:
            on_row(row)
    status = STOPPED if images is None or len(rows) < len(names) else COMPLETED
    n_val = len(images.val_paths) if images is not None else 0
    rows = sort_rows(rows)
    settings = {"head": HEAD, "optimizer": OPTIMIZER, "learning_rate": LEARNING_RATE, "epochs": EPOCHS,
                "patience": PATIENCE, "resize": base.resize, "precision": base.precision,
                "batch_size": base.batch_size, "seed": base.seed}  # fmt: skip
    return Bakeoff(
        rows=rows, status=status, asked=names, recommendation=recommend(rows, n_val, status == STOPPED),
        dataset=dataset.title, image_size=base.image_size, weights=base.weights, int8=int8,
        train_images=len(images.train_paths) if images is not None else 0, val_images=n_val, settings=settings,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(time.monotonic() - started, 2),
    )  # fmt: skip


def _trial(trial, name: str, config: TrainConfig, images, steps: _Steps, int8: bool, cache) -> dict[str, Any]:
    """One backbone's row: its figures, or the sentence why it has none (a stop is passed on)."""
    row, started = empty_row(name), time.monotonic()
    try:
        if config.weights == "imagenet" and (problem := backbones.weights_problem(name, HEAD)):
            row["error"] = problem  # no build, no download attempt: the sentence the page shows for the form
        else:
            row.update(trial.run_trial(config, images, steps, int8, cache))
    except Cancelled:
        raise
    except UserError as exc:
        row["error"] = getattr(exc, "short", None) or str(exc)
    except Exception as exc:  # a bug or a backbone that cannot run here: its row says so, the others go on
        log.exception("bake-off: %s failed", name)
        row["error"] = f"{row['title']} failed unexpectedly: {type(exc).__name__}: {str(exc)[:300]}"
    row["seconds"] = round(time.monotonic() - started, 2)
    return row


# ---------------------------------------------------------------------------------------------- the pure part


def scored(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with a validation accuracy (no error), most accurate first, the smaller first among equals."""
    have = [r for r in rows if r.get("val_accuracy") is not None]
    return sorted(have, key=lambda r: (-r["val_accuracy"], r.get("size_mb") or math.inf, r.get("latency_ms") or 0))


def sort_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's order: by accuracy, then size (``scored``); rows without an accuracy last, as they came."""
    return scored(rows) + [r for r in rows if r.get("val_accuracy") is None]


def recommend(rows: Sequence[dict[str, Any]], val_images: int = 0, stopped: bool = False) -> dict[str, str] | None:
    """The backbone ``RULE`` picks, with the reason in words; None when no row has a result."""
    ranked = scored(rows)
    if not ranked:
        return None
    best = ranked[0]
    near = [r for r in ranked if r["val_accuracy"] >= best["val_accuracy"] - WITHIN - EPS]
    pick = min(near, key=lambda r: (r["size_mb"], r["latency_ms"]))
    text = _reason(pick, best, ranked)
    if stopped:
        text = f"Of the backbones done before the stop: {text[0].lower()}{text[1:]}"
    if pick.get("int8_accuracy") is not None and pick["val_accuracy"] - pick["int8_accuracy"] > WITHIN + EPS:
        lost = 100 * (pick["val_accuracy"] - pick["int8_accuracy"])
        text += f" Its int8 LiteRT file loses {lost:.1f} points ({pick['int8_accuracy']:.1%})."
    if val_images and 1 / val_images > WITHIN:
        text += (
            f" With {val_images} validation images one image is {100 / val_images:.1f} points, so differences of "
            "a few points may be chance."
        )
    return {"backbone": pick["backbone"], "text": text, "rule": RULE}


def _reason(pick: dict, best: dict, ranked: list[dict]) -> str:
    name, acc = pick["backbone"], f"{pick['val_accuracy']:.1%}"
    if len(ranked) == 1:
        return f"{name} is the only backbone with a result ({acc})."
    if pick is best:
        smaller = [r for r in ranked if r["size_mb"] < best["size_mb"]]
        if not smaller:
            return f"{name} is the most accurate ({acc}) and the smallest too ({best['size_mb']:.1f} MB)."
        closest = max(smaller, key=lambda r: r["val_accuracy"])
        gap = 100 * (best["val_accuracy"] - closest["val_accuracy"])
        return (
            f"{name} is the most accurate ({acc}) and nothing smaller comes within 1 point: the closest, "
            f"{closest['backbone']}, is {gap:.1f} points below at {_size(closest, best)}."
        )
    gap = 100 * (best["val_accuracy"] - pick["val_accuracy"])
    below = f"as accurate as {best['backbone']}" if gap < 0.05 else f"{gap:.1f} points below {best['backbone']}"
    return (
        f"{name} is {below} at {_size(pick, best)} and {_speed(pick, best)} ({acc} against "
        f"{best['val_accuracy']:.1%}; {pick['size_mb']:.1f} MB against {best['size_mb']:.1f} MB, "
        f"{pick['latency_ms']:.1f} ms against {best['latency_ms']:.1f} ms an image)."
    )


def _times(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}".removesuffix(".0")


def _size(small: dict, big: dict) -> str:
    """``small``'s size as a part of ``big``'s: "1/25 of the size", "60% of the size" (under a third)."""
    ratio = big["size_mb"] / small["size_mb"] if small["size_mb"] else math.inf
    return f"1/{ratio:.0f} of the size" if ratio >= 3 else f"{1 / ratio:.0%} of the size"


def _speed(fast: dict, slow: dict) -> str:
    """``fast``'s latency against ``slow``'s: "9× faster", "1.3× slower", "about as fast"."""
    if not fast.get("latency_ms") or not slow.get("latency_ms"):
        return "untimed"
    ratio = slow["latency_ms"] / fast["latency_ms"]
    if ratio >= 1.15:
        return f"{_times(ratio)}× faster"
    if ratio <= 1 / 1.15:
        return f"{_times(1 / ratio)}× slower"
    return "about as fast"


def done_so_far(rows: Sequence[dict[str, Any]]) -> str:
    """The rows done so far in one line, for a job's live view: "Done: mobilenet_v3_small 85.0%, 3.9 MB, 2.1 ms · …"."""
    parts = []
    for r in rows:
        if r.get("val_accuracy") is None:
            parts.append(f"{r['backbone']} (no result)")
        else:
            parts.append(f"{r['backbone']} {r['val_accuracy']:.1%}, {r['size_mb']:.1f} MB, {r['latency_ms']:.1f} ms")
    return "Done: " + " · ".join(parts) if parts else ""
