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
        "--format", default="all", choices=["savedmodel", "litert", "onnx", "all"], help="what to export (default: all)"
    )
    p.add_argument("--int8", action="store_true", help="also a LiteRT file with dynamic-range int8 weights")
    p.add_argument("--out", required=True, help="folder for the bundle (written to OUT/<run-id>/)")
    p.add_argument("--images", type=int, default=None, help="most validation images in the parity check (default: 200)")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")


def run_export(args) -> int:
    from core.workspace.runs import check_run, find_run

    if not Path(args.run).exists() and (run := find_run(args.run)) is not None:
        args.run = str(run.path)
    check_run(args.run)  # a mistyped run is reported at once, before TensorFlow loads
    from core.publish.bundles import FORMATS, parity_markdown
    from core.publish.export import export_run
    from core.publish.parity import MAX_IMAGES

    formats = FORMATS if args.format == "all" else (args.format,)
    start = time.perf_counter()
    seen: set[str] = set()

    def progress(stage: str, done: int, total: int) -> None:
        if stage in seen:
            return
        seen.add(stage)  # one line per stage: the format's place among them and the time so far
        step = f" ({done + 1} of {total})" if stage.startswith("exporting") else ""
        print(f"{time.perf_counter() - start:6.0f} s  {stage}{step}…", file=sys.stderr, flush=True)

    limit = args.images if args.images is not None else MAX_IMAGES
    if limit < 1:
        raise UserError("--images must be at least 1.")
    bundle = export_run(
        args.run, args.out, formats, int8=args.int8, limit=limit, progress=progress, user=access.OPERATOR
    )
    report = json.loads((bundle.path / "parity.json").read_text())
    if args.json:
        print(json.dumps({"bundle": str(bundle.path), "files": bundle.files, **report}, indent=2, ensure_ascii=False))
    else:
        print(parity_markdown(report))
        for name, size in bundle.files.items():
            if "/" not in name or name.startswith("savedmodel/variables"):
                print(f"{size / 1e6:10.1f} MB  {name}")
        print(f"bundle: {bundle.path}")
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
        "export a run (SavedModel, LiteRT, ONNX) with its preprocessing, checked against the app",
        add_export,
        run_export,
    ),
    Command(
        "share", "make a demo link for a saved run (a new key each time: the old link stops)", add_share, run_share
    ),
    Command("unshare", "stop a run's demo link", add_unshare, run_unshare),
)
