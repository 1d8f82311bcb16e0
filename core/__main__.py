"""Command line: inspect a dataset, train a classifier, classify images, evaluate a run, list saved datasets.

    python -m core inspect DATA.zip [--json]
    python -m core datasets [--json]                  # the datasets saved on this server (by the app)
    python -m core jobs [--json] [--all]              # queued, running and recently finished jobs
    python -m core train DATA.zip --out runs/ants --weights none --image-size 64 --epochs 2
    python -m core predict runs/ants photo1.jpg photo2.png --top-k 3 [--json]
    python -m core predict runs/ants photo.jpg --explain heatmaps/ [--explain-class ants]
    python -m core evaluate runs/ants [DATA.zip] --top-k 3 [--json]
    python -m core label-issues runs/ants [--folds 5] [--json]   # suspected label errors (cleanlab)
    python -m core export runs/ants --format all --out exports/ [--int8]   # SavedModel, LiteRT, ONNX + parity
    python -m core train 3f2a9c0d41b7e655 --epochs 2  # a saved dataset's id works wherever DATA.zip does
    python -m core lr-find DATA.zip --weights none --image-size 64 --optimizer adam
    python -m core cache [--clear]
    python -m core speed --image-size 96 [--precision auto]

Exit status 0 on success, 2 on a user error (one line on stderr), 130 when interrupted; export exits 1 when an
export misses its parity target (the bundle is written and says so).
Ctrl-C during training stops after the current batch and saves the model trained so far; a second Ctrl-C aborts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core import access, datasets
from core.config import DEFAULT_LR, LR_FIND_END, LR_FIND_START, LR_FIND_STEPS, TrainConfig, check_lr_range
from core.dataset import Dataset, Limits, human_size, load_dataset
from core.errors import Cancelled, UserError

DATA_HELP = "a .zip file, a folder of class folders, or the id of a dataset saved on this server"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in TrainConfig.describe():
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"] + " (default: %(default)s)"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif isinstance(f.default, tuple):  # a list of values: the flag once per value
            parser.add_argument(flag, action="append", metavar="PATH", help=f.metadata["help"] + " (default: none)")
        elif f.name == "learning_rate":  # its default depends on the optimizer, as on the Train page
            rates = ", ".join(f"{rate:g} for {name}" for name, rate in DEFAULT_LR.items())
            parser.add_argument(flag, type=float, default=None, help=f"{f.metadata['help']} (default: {rates})")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=f.default, choices=f.metadata["choices"], help=help_text)


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    d = Limits()
    parser.add_argument(
        "--max-entries", type=int, default=d.max_entries, help="most entries a zip may hold (default: %(default)s)"
    )
    parser.add_argument(
        "--max-bytes", type=int, default=d.max_total_bytes, help="most bytes a zip may unpack to (default: %(default)s)"
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=d.max_ratio,
        help="highest compression ratio of one entry (default: %(default)s)",
    )
    parser.add_argument(
        "--work-dir", default=None, help="where zips are extracted (default: a temporary folder, removed afterwards)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Make your own image classifier: VGG16 transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inspect", help="check a dataset zip or folder and print its report")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_limit_flags(p)

    p = sub.add_parser("train", help="train a classifier and save it as a run")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--out", default=None, help="run folder to create (default: a new folder in the runs folder)")
    _add_config_flags(p)
    _add_limit_flags(p)

    p = sub.add_parser("predict", help="classify images with a saved run")
    p.add_argument("run", help="a run folder saved by train")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per image (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.add_argument(
        "--explain", metavar="OUT_DIR", default=None, help="write a Grad-CAM heat map over each image as a PNG there"
    )
    p.add_argument("--explain-class", metavar="NAME", default=None, help="class to explain (default: the top class)")

    p = sub.add_parser("evaluate", help="score a saved run on held-out images: accuracy, confusion, worst mistakes")
    p.add_argument("run", help="a run folder saved by train")
    p.add_argument(
        "data",
        nargs="?",
        default=None,
        help="the dataset again (zip, folder or saved dataset id): its test/ split, else its validation images "
        "(default: the dataset the run was trained on while it is saved on this server, else the run's saved "
        "split while its files still exist)",
    )
    p.add_argument(
        "--top-k", type=int, default=3, help="a hit when the true class is in the top K (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the whole evaluation as JSON")

    p = sub.add_parser(
        "lr-find", help="learning-rate range test: loss per batch as the rate grows, and a suggested rate"
    )
    p.add_argument("data", help=DATA_HELP)
    _add_config_flags(p)
    _add_limit_flags(p)
    p.add_argument("--start-lr", type=float, default=LR_FIND_START, help="first learning rate (default: %(default)g)")
    p.add_argument("--end-lr", type=float, default=LR_FIND_END, help="last learning rate (default: %(default)g)")
    p.add_argument("--steps", type=int, default=LR_FIND_STEPS, help="batches in the test (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print every step as JSON")

    p = sub.add_parser("label-issues", help="suspected label errors among a run's training images, found by cleanlab")
    p.add_argument("run", help="a run folder saved by train")
    p.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold predictions (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")

    p = sub.add_parser(
        "export", help="export a run (SavedModel, LiteRT, ONNX) with its preprocessing, checked against the app"
    )
    p.add_argument("run", help="a run folder saved by train, or a run id from the runs folder")
    p.add_argument(
        "--format", default="all", choices=["savedmodel", "litert", "onnx", "all"], help="what to export (default: all)"
    )
    p.add_argument("--int8", action="store_true", help="also a LiteRT file with dynamic-range int8 weights")
    p.add_argument("--out", required=True, help="folder for the bundle (written to OUT/<run-id>/)")
    p.add_argument("--images", type=int, default=None, help="most validation images in the parity check (default: 200)")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")

    p = sub.add_parser("share", help="make a demo link for a saved run (a new key each time: the old link stops)")
    p.add_argument("run", help="the run's id (its folder name in the runs folder)")
    p.add_argument("--expires", type=float, default=None, metavar="DAYS", help="the link stops working after DAYS")
    p = sub.add_parser("unshare", help="stop a run's demo link")
    p.add_argument("run", help="the run's id")

    p = sub.add_parser("datasets", help="list the datasets saved on this server, most recently used first")
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    p = sub.add_parser("jobs", help="list the jobs on this server: queued, running and finished in the last day")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--all", action="store_true", help="every job ever recorded, not only the last day's")

    p = sub.add_parser("cache", help="show or clear the cache of decoded images and frozen-layer features")
    p.add_argument("--clear", action="store_true", help="remove every cached entry")

    from core.config import PRECISIONS

    p = sub.add_parser("speed", help="time VGG16 on this server at a size and record it for time estimates")
    p.add_argument("--image-size", type=int, default=224, help="square input size in pixels (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="compute precision (default: %(default)s)")
    p.add_argument("--images", type=int, default=None, help="images per timed batch (default: 16, 8 above 128 px)")
    return parser


def _bar_progress(desc: str, unit: str):
    bar: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "b" not in bar:
            bar["b"] = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
        bar["b"].total = total
        bar["b"].update(done - bar["b"].n)
        if done >= total:
            bar["b"].close()
            del bar["b"]

    return update


def _load(args):
    limits = Limits(max_entries=args.max_entries, max_total_bytes=args.max_bytes, max_ratio=args.max_ratio)
    return _dataset(args.data, args.work_dir or args._tmp, limits)


def _dataset(data: str, work_dir, limits: Limits | None = None) -> Dataset:
    """A zip or a folder, or, when no such path exists, the id of a saved dataset (opened without a rescan)."""
    if not Path(data).exists() and datasets.is_id(data):
        return datasets.open_dataset(data)  # an unknown id: UnknownDataset, one line
    return load_dataset(data, work_dir, limits, _bar_progress("reading dataset", "file"))


def cmd_inspect(args) -> int:
    from core.duplicates import find_duplicates

    ds = _load(args)
    r = ds.report
    dup = find_duplicates(ds, _bar_progress("looking for duplicates", "img"))
    if args.json:
        print(json.dumps({**r.to_dict(), "duplicates": dup.to_dict()}, indent=2, ensure_ascii=False))
        return 0
    print(f"{r.source}: {len(r.classes)} classes, {r.total} images ({r.layout} layout)")
    splits = sorted({s for c in r.counts.values() for s in c})
    for cls in r.classes:
        print(f"  {cls:30s} " + "  ".join(f"{s} {r.counts[cls].get(s, 0):6d}" for s in splits))
    if r.image_sizes:
        s = r.image_sizes
        print(
            f"image sizes: width {s['min_width']}-{s['max_width']} (median {s['median_width']:g}), "
            f"height {s['min_height']}-{s['max_height']} (median {s['median_height']:g})"
        )
    for w in r.warnings:
        print(f"warning: {w}")
    if r.skipped:
        print(f"skipped {len(r.skipped)} files:")
        for s in r.skipped:
            print(f"  {s['file']}: {s['reason']}")
    if r.ignored:
        print(f"ignored {r.ignored} system files (__MACOSX, dot-files, Thumbs.db...)")
    _print_duplicates(dup)
    return 0


def _print_duplicates(dup, shown: int = 10) -> None:
    print("duplicates: " + " ".join(dup.summary()))
    for p in dup.pairs[:shown]:
        where = f"{p.class_a}" if p.class_a == p.class_b else f"{p.class_a} / {p.class_b}"
        if p.leak:
            where += f", {p.split_a} / {p.split_b}"
        print(f"  {p.relation}, {p.kind} (distance {p.distance}): {p.a}  {p.b}  ({where})")
    if dup.pairs_total > shown:
        print(f"  ... and {dup.pairs_total - min(shown, len(dup.pairs)):,} more pairs (--json lists {len(dup.pairs)})")


def cmd_train(args) -> int:
    config = _config(args)
    ds = _load(args)
    r = ds.report
    print(f"{r.source}: {len(r.classes)} classes, {r.total} images", file=sys.stderr)
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)

    from core.training import train  # TensorFlow loads here, after the dataset is known to be good

    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        tqdm.write("stopping after this batch (Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    listener = _TrainBars()
    try:
        result = train(ds, config, args.out, listener, stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        listener.close()
    m = result.metrics
    from core import calibration

    if trust := calibration.load(result.run_dir):
        print(trust.summary(), file=sys.stderr)
    print(
        f"{result.status}: {m['epochs_completed']} epochs, val_accuracy {m['val_accuracy']:.3f}, "
        f"val_loss {m['val_loss']:.4f}, {m['seconds']:.0f} s; saved to {result.run_dir}"
    )
    return 0


class _TrainBars:
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


def _config(args) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if values["learning_rate"] is None:
        values["learning_rate"] = DEFAULT_LR[values["optimizer"]]
    return TrainConfig(**values).validate()


def cmd_lr_find(args) -> int:
    config = _config(args)
    check_lr_range(args.start_lr, args.end_lr, args.steps)
    ds = _load(args)
    from core.lrfind import lr_find  # TensorFlow loads here, after the dataset is known to be good

    bars = {"features": ("frozen layers, once per image", "img"), "reading": ("reading images", "img")}
    progress = {name: _bar_progress(desc, unit) for name, (desc, unit) in bars.items()}
    progress["testing"] = _bar_progress("learning-rate test", "batch")
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


def cmd_predict(args) -> int:
    from core.runs import check_run

    check_run(args.run)  # a mistyped folder is reported at once, before TensorFlow loads
    if args.explain_class is not None and not args.explain:
        raise UserError("--explain-class needs --explain OUT_DIR, the folder for the heat-map images.")
    from core.predict import load_run, predict

    run = load_run(args.run)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing and len(missing) == len(args.images):
        raise UserError(f"No such image file: {missing[0]}.")
    results = predict(run, [str(p) for p in args.images], top_k=args.top_k, names=list(args.images))
    explained: dict[int, dict[str, str]] = {}  # result index -> class explained and PNG written
    if args.explain:
        from core.explain import save_overlays

        ok = [i for i, p in enumerate(results) if p.ok]  # a file predict skipped is not explained either
        names = [args.images[i] for i in ok]
        saved = save_overlays(run, names, args.explain, args.explain_class, names)
        explained = {i: {"class": e.class_name, "file": str(path)} for i, (e, path) in zip(ok, saved, strict=True)}
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "file": p.name,
                        **({"answer": p.answer, "sure": p.sure, "threshold": p.threshold} if p.ok else {}),
                        "predictions": [{"class": c, "probability": round(pr, 6)} for c, pr in p.top],
                        **({"error": p.error} if p.error else {}),
                        **({"explanation": explained[i]} if i in explained else {}),
                    }
                    for i, p in enumerate(results)
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for p in results:
            if p.ok and not p.sure:
                guesses = ", ".join(f"{c} {pr:.1%}" for c, pr in p.top)
                print(f"{p.name}: not sure (below the run's {p.threshold:.0%} threshold; best guesses: {guesses})")
            elif p.ok:
                print(f"{p.name}: " + ", ".join(f"{c} {pr:.1%}" for c, pr in p.top))
            else:
                print(f"{p.name}: skipped: {p.error}", file=sys.stderr)
        for i, e in explained.items():
            print(f"{results[i].name}: Grad-CAM of {e['class']} saved to {e['file']}")
    return 0 if any(p.ok for p in results) else 2


def cmd_evaluate(args) -> int:
    from core.runs import check_run, read_run

    check_run(args.run)  # a mistyped folder is reported at once, before TensorFlow loads
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1 (got {args.top_k}).")
    ds = None
    if args.data:
        ds = _dataset(args.data, args._tmp)
    elif datasets.exists(trained_on := read_run(args.run).dataset_id):
        # The dataset the run was trained on is still saved: its held-out images, read from its record, with
        # no rescan of the folder.
        ds = datasets.open_dataset(trained_on)
        print(f"evaluating on the saved dataset {ds.title} ({ds.id})", file=sys.stderr)
    from core.evaluate import FILE, evaluate_run

    ev = evaluate_run(
        args.run, ds, top_k=args.top_k, progress=_bar_progress("classifying", "img"), user=access.OPERATOR
    )
    for w in ev.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(ev.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"{ev.images} {ev.split} images of {ev.data}" + ("" if ev.source == "given data" else " (saved split)"))
    print(f"accuracy {ev.accuracy:.3f}, loss {ev.loss:.4f}, top-{ev.top_k} accuracy {ev.top_k_accuracy:.3f}")
    width = max(len(c) for c in ev.classes)
    print(f"  {'class':{width}s}  precision  recall     f1  support")
    for r in ev.per_class:
        print(f"  {r['class']:{width}s}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}")
    if c := ev.calibration:
        if c["temperature"] != 1.0:
            print(
                f"expected calibration error (15 bins): {c['ece_before']:.3f} before calibration, "
                f"{c['ece_after']:.3f} after (temperature {c['temperature']:.2f})"
            )
        else:
            print(f"expected calibration error (15 bins): {c['ece_after']:.3f} (the run is not calibrated)")
        if c["threshold"] is not None:
            print(
                f"not-sure threshold {c['threshold']:.0%}: answers {c['coverage']:.0%} of these images, "
                f"{c['accepted_accuracy']:.0%} of those right"
            )
    if ev.most_confused:
        print("most confused (true -> predicted):")
        for m in ev.most_confused[:10]:
            print(f"  {m['true']} -> {m['predicted']}: {m['count']}")
    if ev.misclassified:
        print("worst misclassified:")
        for m in ev.misclassified[:10]:
            print(
                f"  {m['file']}: {m['true']}, predicted {m['predicted']} {m['probability']:.1%} "
                f"({m['true']} {m['true_probability']:.1%})"
            )
    print(f"saved to {Path(args.run) / FILE}")
    return 0


def cmd_label_issues(args) -> int:
    from core.label_issues import FILE, find_label_issues
    from core.runs import check_run, find_run

    if not Path(args.run).exists() and (run := find_run(args.run)) is not None:
        args.run = str(run.path)  # a run's id (its folder's name in the runs folder) works too
    check_run(args.run)  # a mistyped folder is reported at once, before TensorFlow loads
    bars = {"features": ("frozen layers, once per image", "img"), "folds": ("out-of-fold predictions", "fold")}
    progress = {name: _bar_progress(desc, unit) for name, (desc, unit) in bars.items()}
    found = find_label_issues(
        args.run, folds=args.folds, progress=lambda st, d, t: progress[st](d, t), user=access.OPERATOR
    )
    for w in found.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"{found.images} training and validation images of {found.dataset}, {found.folds}-fold, features: "
          f"{found.features}; out-of-fold accuracy {found.out_of_fold_accuracy:.3f}")  # fmt: skip
    if not found.suspects:
        print("no suspected label errors")
    else:
        print(f"{len(found.suspects)} suspected label errors, most suspicious first:")
        rows = [(s["file"], s["given"], s["suggested"], f"{s['confidence']:.1%}", f"{s['given_probability']:.1%}")
                for s in found.suspects]  # fmt: skip
        header = ("file", "given", "suggested", "confidence", "given's")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"saved to {Path(args.run) / FILE}")
    return 0


def cmd_export(args) -> int:
    from core.runs import check_run, find_run

    if not Path(args.run).exists() and (run := find_run(args.run)) is not None:
        args.run = str(run.path)
    check_run(args.run)  # a mistyped run is reported at once, before TensorFlow loads
    from core.bundles import FORMATS, parity_markdown
    from core.export import MAX_IMAGES, export_run

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


def _run_dir(run_id: str) -> Path:
    from core import runs

    found = runs.find_run(run_id)
    if found is None:
        raise UserError(f"There is no run {run_id!r} in {runs.runs_dir()}: `python -m core jobs --all` lists them.")
    return found.path


def cmd_share(args) -> int:
    from core import share

    token = share.share(_run_dir(args.run), access.OPERATOR, expires_days=args.expires)
    print(f"?demo={args.run}&key={token}")
    print("add this to the app's address; it is shown once (only its hash is kept)"
          + (f" and stops working in {args.expires:g} days" if args.expires else ""), file=sys.stderr)  # fmt: skip
    return 0


def cmd_unshare(args) -> int:
    from core import share

    share.unshare(_run_dir(args.run), access.OPERATOR)
    print(f"the demo link of {args.run} no longer works", file=sys.stderr)
    return 0


def cmd_datasets(args) -> int:
    found = datasets.list_datasets()
    if args.json:
        iso = ("added", "last_used")
        rows = [{k: _iso(v) if k in iso else v for k, v in s.to_dict().items()} for s in found]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print(f"no saved datasets in {datasets.datasets_dir()}")
        return 0
    header = ("id", "name", "classes", "images", "size", "added", "by", "last used")
    rows = [
        (s.id, s.name, str(s.classes), str(s.images), human_size(s.bytes), _iso(s.added, " "),
         s.added_by or "guest", _iso(s.last_used, " "))
        for s in found
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_jobs(args) -> int:
    from core.jobs import JobRegistry

    found = JobRegistry(dispatch=False).jobs(recent=None if args.all else 24 * 3600)
    if args.json:
        keep = ("id", "kind", "state", "owner", "dataset_id", "dataset", "created", "started", "ended", "done", "total",
                "epoch", "epochs", "eta", "error", "metrics", "restarted_as")  # fmt: skip
        rows = [{k: getattr(j, k) for k in keep} | {"stopping": j.stopping} for j in found]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("no jobs" + ("" if args.all else " in the last day (--all lists older ones)"))
        return 0
    header = ("id", "kind", "state", "by", "dataset", "progress", "created")
    rows = [
        (j.id, j.label, "stopping" if j.stopping else j.state, access.display(j.owner) if j.owner else "guest",
         j.dataset or "-", _job_progress(j), _iso(j.created, " "))
        for j in found
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _job_progress(job) -> str:
    if job.finished:
        acc = job.metrics.get("val_accuracy")
        return f"val acc {acc:.1%}" if acc is not None else (job.error or "")[:60]
    if not job.running:
        return "-"
    eta = f", ETA {round(job.eta)} s" if job.eta is not None else ""
    if job.epochs and job.state == "training":
        return f"epoch {job.epoch}/{job.epochs}{eta}"
    return f"{job.stage or job.state} {job.done}/{job.total}{eta}"


def _iso(seconds: float, sep: str = "T") -> str:
    return time.strftime(f"%Y-%m-%d{sep}%H:%M" + (":%S" if sep == "T" else ""), time.localtime(seconds))


def cmd_cache(args) -> int:
    from core.cache import ArrayCache

    cache = ArrayCache()
    if args.clear:
        print(f"cleared {cache.clear() / 1024**2:.1f} MB from {cache.root}")
    else:
        info = cache.info()
        print(f"{info['path']}: {info['entries']} entries, {info['bytes'] / 1024**2:.1f} MB "
              f"(limit {info['limit_bytes'] / 1024**2:.0f} MB)")  # fmt: skip
    return 0


def cmd_speed(args) -> int:
    from core.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

    if not MIN_IMAGE_SIZE <= args.image_size <= MAX_IMAGE_SIZE or (args.images is not None and args.images < 1):
        raise UserError(f"--image-size must be {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} and --images at least 1.")
    from core.speed import describe, measure_speed  # TensorFlow loads here

    measure_speed(args.image_size, args.precision, images=args.images)
    print(describe(args.image_size, args.precision))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "inspect": cmd_inspect,
        "train": cmd_train,
        "predict": cmd_predict,
        "evaluate": cmd_evaluate,
        "cache": cmd_cache,
        "datasets": cmd_datasets,
        "jobs": cmd_jobs,
        "lr-find": cmd_lr_find,
        "label-issues": cmd_label_issues,
        "export": cmd_export,
        "share": cmd_share,
        "unshare": cmd_unshare,
        "speed": cmd_speed,
    }
    with tempfile.TemporaryDirectory(prefix="classifier-") as tmp:
        args._tmp = tmp
        try:
            return commands[args.command](args)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Cancelled as exc:
            print(str(exc), file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
