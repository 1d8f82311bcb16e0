"""python -m core train | lr-find | speed: a training with its progress bars, the learning-rate test, the speed test."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.cli.common import (
    DATA_HELP,
    Command,
    add_config_flags,
    add_limit_flags,
    bar_progress,
    config_from,
    load,
)  # fmt: skip
from core.config import (
    LR_FIND_END,
    LR_FIND_START,
    LR_FIND_STEPS,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    PRECISIONS,
    check_lr_range,
)
from core.util.errors import UserError
from core.workspace import access, runs


class TrainBars:
    """tqdm bars for reading images and for batches; epoch summaries printed above them."""

    def __init__(self):
        self.bar: tqdm | None = None
        self.stage = ""

    def __call__(self, ev) -> None:
        if ev.kind == "plan":
            self.close()
            print(ev.message, file=sys.stderr)
            return
        if ev.stage != self.stage or self.bar is None:
            self.close()
            self.stage = ev.stage
            desc, unit = {
                "reading": ("reading images", "img"),
                "features": ("frozen layers, once per image", "img"),
            }.get(ev.stage, ("training", "batch"))
            self.bar = tqdm(total=ev.total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(ev.done - self.bar.n)
        if ev.kind == "batch":
            self.bar.set_postfix_str(f"epoch {ev.epoch}/{ev.epochs} loss {ev.logs.get('loss', 0):.4f}")
        elif ev.kind == "epoch":
            logs = " ".join(f"{k} {v:.4f}" for k, v in ev.logs.items() if k != "learning_rate")
            self.bar.write(f"epoch {ev.epoch}/{ev.epochs}: {logs}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--out", default=None, help="run folder to create (default: a new folder in the runs folder)")
    add_config_flags(p)
    add_limit_flags(p)


def run_train(args) -> int:
    config = config_from(args)
    ds = load(args)
    return _train_here(ds, config, args.out)


def _train_here(ds, config, out) -> int:
    """Train in this process with progress bars; Ctrl-C stops after the current batch and keeps the model."""
    r = ds.report
    version = f", version {ds.version}" if ds.version else ""
    print(f"{r.source}{version}: {len(r.classes)} classes, {r.total} images", file=sys.stderr)
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)

    from core.train.training import train

    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        tqdm.write("stopping after this batch (Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    listener = TrainBars()
    try:
        result = train(ds, config, out, listener, stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        listener.close()
    m = result.metrics
    from core.model import calibration

    if trust := calibration.load(result.run_dir):
        print(trust.summary(), file=sys.stderr)
    print(
        f"{result.status}: {m['epochs_completed']} epochs, val_accuracy {m['val_accuracy']:.3f}, "
        f"val_loss {m['val_loss']:.4f}, {m['seconds']:.0f} s; saved to {result.run_dir}"
    )
    return 0


def add_retrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a saved run: its folder, or its id in the runs folder")
    p.add_argument(
        "--newest",
        action="store_true",
        help="train on the newest version of the run's saved dataset (default: the version the run trained on)",
    )
    p.add_argument("--out", default=None, help="run folder to create (default: a new folder in the runs folder)")


def run_retrain(args) -> int:
    from core.jobs.registry import retrain_inputs  # no TensorFlow: the run, its config and its dataset

    run = runs.read_run(args.run) if Path(args.run).is_dir() else args.run  # a run folder, or an id
    ds, config = retrain_inputs(run, access.OPERATOR, newest=args.newest)
    return _train_here(ds, config, args.out)


def add_lr_find(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help=DATA_HELP)
    add_config_flags(p)
    add_limit_flags(p)
    p.add_argument("--start-lr", type=float, default=LR_FIND_START, help="first learning rate (default: %(default)g)")
    p.add_argument("--end-lr", type=float, default=LR_FIND_END, help="last learning rate (default: %(default)g)")
    p.add_argument("--steps", type=int, default=LR_FIND_STEPS, help="batches in the test (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print every step as JSON")


def run_lr_find(args) -> int:
    config = config_from(args)
    check_lr_range(args.start_lr, args.end_lr, args.steps)
    ds = load(args)
    from core.train.lrfind import lr_find  # TensorFlow loads here, after the dataset is known to be good

    bars = {"features": ("frozen layers, once per image", "img"), "reading": ("reading images", "img")}
    progress = {name: bar_progress(desc, unit) for name, (desc, unit) in bars.items()}
    progress["testing"] = bar_progress("learning-rate test", "batch")
    f = lr_find(ds, config, args.start_lr, args.end_lr, args.steps, progress=lambda st, d, t: progress[st](d, t))
    if args.json:
        print(json.dumps(f.to_dict(), indent=2))
        return 0
    print(f"{len(f.losses)} batches of {config.batch_size} training images, {f.path}, {f.seconds:.1f} s")
    print("  learning rate   loss (smoothed)")
    rows = {round(j) for j in np.linspace(0, len(f.losses) - 1, min(12, len(f.losses)))}
    best = f.learning_rates.index(f.suggestion) if f.suggestion is not None else -1
    for i in sorted(rows | ({best} if best >= 0 else set())):
        mark = "  <- suggested" if i == best else ""
        print(f"  {f.learning_rates[i]:13.2e}   {f.smoothed[i]:.4f}{mark}")
    if f.suggestion is None:
        print(f"no suggestion: {f.reason}")
    else:
        print(f"suggested learning rate: {f.suggestion:.2g} ({f.reason})")
        print(f"train with: --optimizer {config.optimizer} --learning-rate {f.suggestion:.2g}")
    return 0


def add_speed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, default=224, help="square input size in pixels (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="compute precision (default: %(default)s)")
    p.add_argument("--images", type=int, default=None, help="images per timed batch (default: 16, 8 above 128 px)")


def run_speed(args) -> int:

    if not MIN_IMAGE_SIZE <= args.image_size <= MAX_IMAGE_SIZE or (args.images is not None and args.images < 1):
        raise UserError(f"--image-size must be {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} and --images at least 1.")
    from core.train.pace import describe
    from core.train.speedtest import measure_speed

    measure_speed(args.image_size, args.precision, images=args.images)
    print(describe(args.image_size, args.precision))
    return 0


COMMANDS = (
    Command("train", "train a classifier and save it as a run", add_train, run_train),
    Command(
        "retrain",
        "train a saved run's settings again, on the version of its dataset it used or (--newest) the newest",
        add_retrain,
        run_retrain,
    ),
    Command(
        "lr-find",
        "learning-rate range test: loss per batch as the rate grows, and a suggested rate",
        add_lr_find,
        run_lr_find,
    ),
    Command("speed", "time VGG16 on this server at a size and record it for time estimates", add_speed, run_speed),
)
