"""python -m core bakeoff: every backbone (or those named) trained briefly on a dataset and measured, as a table with a
recommendation (``core.publish.bakeoff``).

    python -m core bakeoff DATA.zip --weights none --image-size 96 [--backbones mobilenet_v3_small,vgg16] [--int8]

Progress goes to stderr, a line per step and one per backbone done; the table and the recommendation (or, with
``--json``, the whole result) to stdout. Ctrl-C stops within one batch and prints the backbones done so far.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from core.cli.common import DATA_HELP, Command, add_limit_flags, load, print_table
from core.config import TrainConfig
from core.model import backbones
from core.util.errors import UserError

WEIGHTS = {"imagenet": "ImageNet", "none": "random"}


def add_bakeoff(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help=DATA_HELP)
    p.add_argument(
        "--backbones", default=None, metavar="A,B,C",
        help=f"the backbones to compare, separated by commas (default: all: {','.join(backbones.NAMES)})",
    )  # fmt: skip
    p.add_argument(
        "--int8", action="store_true",
        help="also convert each trained model to a full-integer int8 LiteRT file and score it on the validation images",
    )  # fmt: skip
    p.add_argument("--image-size", type=int, default=224, help="square input size in pixels (default: %(default)s)")
    p.add_argument(
        "--weights", choices=("imagenet", "none"), default="imagenet",
        help="the backbones' weights: imagenet (downloaded once) or none (random) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    add_limit_flags(p)


def names_of(text: str | None) -> list[str] | None:
    """The backbones of ``--backbones`` (None: all), each checked: an unknown one is a UserError naming the choices."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"--backbones names none; choose from {', '.join(backbones.NAMES)}.")
    for name in names:
        backbones.get(name)
    return names


def run_bakeoff(args) -> int:
    names = names_of(args.backbones)  # a mistyped name is one line at once, before the dataset and TensorFlow
    base = TrainConfig(weights=args.weights, image_size=args.image_size).validate()
    ds = load(args)
    from core.publish.bakeoff import bakeoff, check_base

    check_base(base)
    stop, start, seen = threading.Event(), time.perf_counter(), set()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("stopping within a batch, keeping the backbones done (Ctrl-C again to abort)...", file=sys.stderr)

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:  # one line per step, with the time so far
            seen.add(stage)
            print(f"{time.perf_counter() - start:6.0f} s  {stage}…", file=sys.stderr, flush=True)

    def on_row(row: dict) -> None:
        print(f"{time.perf_counter() - start:6.0f} s  {row['backbone']}: {_summary(row)}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = bakeoff(ds, names, base, progress=progress, stop=stop, int8=args.int8, on_row=on_row)
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print_table(*table(result.rows, result.int8))
    done = f"stopped after {len(result.rows)} of {len(result.asked)} backbones" if result.stopped else "completed"
    print(f"\n{done}: {result.train_images} training and {result.val_images} validation images of {result.dataset}, "
          f"{result.image_size} px, {WEIGHTS[result.weights]} weights, {result.seconds:.0f} s")  # fmt: skip
    if result.recommendation:
        print(f"recommended: {result.recommendation['text']}")
    else:
        print("no recommendation: no backbone has a result")
    return 0


def _summary(row: dict) -> str:
    if row["val_accuracy"] is None:
        return f"error: {row['error']}"
    return f"val accuracy {row['val_accuracy']:.1%}, {row['size_mb']:.1f} MB, {row['latency_ms']:.1f} ms an image"


def table(rows: list[dict], int8: bool) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the bake-off's table: accuracy, (int8 accuracy), size, parameters, latency, and a note."""
    header = ["backbone", "val accuracy", *(["int8 accuracy"] if int8 else []), "size MB", "params", "latency ms",
              "note"]  # fmt: skip
    out = []
    for r in rows:
        scored = r["val_accuracy"] is not None
        cells = [r["backbone"], f"{r['val_accuracy']:.1%}" if scored else "–"]
        if int8:
            cells.append(f"{r['int8_accuracy']:.1%}" if r.get("int8_accuracy") is not None else "–")
        cells += [f"{r['size_mb']:.1f}", f"{r['params']:,}", f"{r['latency_ms']:.1f}"] if scored else ["–"] * 3
        cells.append(r["error"] or r.get("int8_error") or "")
        out.append(cells)
    return header, out


COMMANDS = (
    Command(
        "bakeoff",
        "compare the backbones on a dataset: accuracy of a head trained on each one's frozen features, size, latency",
        add_bakeoff,
        run_bakeoff,
    ),
)
