"""python -m core export | share | unshare: a run as files for other runtimes, and its demo link."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.cli.common import (
    Command,
    run_dir,
)  # fmt: skip
from core.util.errors import UserError
from core.workspace import access


def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder saved by train, or a run id from the runs folder")
    p.add_argument(
        "--formats",
        "--format",
        default="all",
        metavar="NAMES",
        help="what to export, comma-separated: saved_model, litert, litert-fp16 (float16 weights), litert-int8 "
        "(full-integer, calibrated on the run's training images), onnx, or all (default: all)",
    )
    p.add_argument("--int8", action="store_true", help="also litert-int8 (as adding it to --formats)")
    p.add_argument("--out", required=True, help="folder for the bundle (written to OUT/<run-id>/)")
    p.add_argument("--images", type=int, default=None, help="most validation images in the parity check (default: 200)")
    p.add_argument("--json", action="store_true", help="print the parity and deployment reports as JSON")


def run_export(args) -> int:
    from core.publish.bundles import parity_markdown, parse_formats
    from core.publish.report import report_markdown
    from core.workspace.runs import check_run, find_run

    formats = parse_formats(args.formats)  # a mistyped format or run is reported at once, before TensorFlow loads
    if args.int8:
        formats = parse_formats([*formats, "litert-int8"])
    if not Path(args.run).exists() and (run := find_run(args.run)) is not None:
        args.run = str(run.path)
    check_run(args.run)
    from core.publish.export import export_run
    from core.publish.parity import MAX_IMAGES

    start = time.perf_counter()
    seen: set[str] = set()

    def progress(stage: str, done: int, total: int) -> None:
        if stage in seen:
            return
        seen.add(stage)  # one line per stage: the format's place among them and the time so far
        step = f" ({done + 1} of {total})" if stage.startswith(("exporting", "timing")) else ""
        print(f"{time.perf_counter() - start:6.0f} s  {stage}{step}…", file=sys.stderr, flush=True)

    limit = args.images if args.images is not None else MAX_IMAGES
    if limit < 1:
        raise UserError("--images must be at least 1.")
    bundle = export_run(args.run, args.out, formats, limit=limit, progress=progress, user=access.OPERATOR)
    report = json.loads((bundle.path / "parity.json").read_text())
    if args.json:
        print(json.dumps({"bundle": str(bundle.path), "files": bundle.files, **report, "deployment": bundle.deployment},
                         indent=2, ensure_ascii=False))  # fmt: skip
    else:
        print(parity_markdown(report))
        print(report_markdown(bundle.deployment))
        for name, size in bundle.files.items():
            if "/" not in name or name.startswith("savedmodel/variables"):
                print(f"{size / 1e6:10.1f} MB  {name}")
        print(f"bundle: {bundle.path}")
    for warning in bundle.deployment["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if not bundle.passed:
        print("error: an export missed its parity target (see PARITY.md): do not ship it", file=sys.stderr)
        return 1
    return 0


def add_share(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="the run's id (its folder name in the runs folder)")
    p.add_argument("--expires", type=float, default=None, metavar="DAYS", help="the link stops working after DAYS")


def run_share(args) -> int:
    from core.workspace import share

    token = share.share(run_dir(args.run), access.OPERATOR, expires_days=args.expires)
    print(f"?demo={args.run}&key={token}")
    print("add this to the app's address; it is shown once (only its hash is kept)"
          + (f" and stops working in {args.expires:g} days" if args.expires else ""), file=sys.stderr)  # fmt: skip
    return 0


def add_unshare(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="the run's id")


def run_unshare(args) -> int:
    from core.workspace import share

    share.unshare(run_dir(args.run), access.OPERATOR)
    print(f"the demo link of {args.run} no longer works", file=sys.stderr)
    return 0


COMMANDS = (
    Command(
        "export",
        "export a run (SavedModel, LiteRT float32/float16/int8, ONNX) with its preprocessing, checked against the "
        "app, and a deployment report (size, latency, accuracy per class, ECE)",
        add_export,
        run_export,
    ),
    Command(
        "share", "make a demo link for a saved run (a new key each time: the old link stops)", add_share, run_share
    ),
    Command("unshare", "stop a run's demo link", add_unshare, run_unshare),
)
