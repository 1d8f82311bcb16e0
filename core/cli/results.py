"""python -m core predict | evaluate | label-issues: what a saved run answers, how well, and which labels it doubts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.common import (
    Command,
    bar_progress,
    dataset_from,
    print_table,
)  # fmt: skip
from core.util.errors import UserError
from core.workspace import access, datasets, records


def add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder saved by train")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per image (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.add_argument(
        "--explain", metavar="OUT_DIR", default=None, help="write a Grad-CAM heat map over each image as a PNG there"
    )
    p.add_argument("--explain-class", metavar="NAME", default=None, help="class to explain (default: the top class)")


def _answer_json(p) -> dict:
    """What --json says of an answered image; the "none of these" ones are null when the run cannot say (trained
    before it existed, or with it off)."""
    return {"answer": p.answer, "sure": p.sure, "threshold": p.threshold, "none_of_these": p.none_of_these,
            "none_of_these_score": p.score, "none_of_these_threshold": p.score_threshold}  # fmt: skip


def run_predict(args) -> int:
    from core.workspace.runs import check_run

    check_run(args.run)  # a mistyped folder is reported at once, before TensorFlow loads
    if args.explain_class is not None and not args.explain:
        raise UserError("--explain-class needs --explain OUT_DIR, the folder for the heat-map images.")
    from core.model.predict import load_run, predict

    run = load_run(args.run)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing and len(missing) == len(args.images):
        raise UserError(f"No such image file: {missing[0]}.")
    results = predict(run, [str(p) for p in args.images], top_k=args.top_k, names=list(args.images))
    explained: dict[int, dict[str, str]] = {}  # result index -> class explained and PNG written
    if args.explain:
        from core.evaluate.explain import save_overlays

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
                        **(_answer_json(p) if p.ok else {}),
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
            if p.ok and p.none_of_these:
                guesses = ", ".join(f"{c} {pr:.1%}" for c, pr in p.top)
                print(f"{p.name}: none of these (unlike every class: score {p.score:.4g} above the run's "
                      f"{p.score_threshold:.4g}; closest: {guesses})")  # fmt: skip
            elif p.ok and not p.sure:
                guesses = ", ".join(f"{c} {pr:.1%}" for c, pr in p.top)
                print(f"{p.name}: not sure (below the run's {p.threshold:.0%} threshold; best guesses: {guesses})")
            elif p.ok:
                print(f"{p.name}: " + ", ".join(f"{c} {pr:.1%}" for c, pr in p.top))
            else:
                print(f"{p.name}: skipped: {p.error}", file=sys.stderr)
        for i, e in explained.items():
            print(f"{results[i].name}: Grad-CAM of {e['class']} saved to {e['file']}")
    return 0 if any(p.ok for p in results) else 2


def add_evaluate(p: argparse.ArgumentParser) -> None:
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


def run_evaluate(args) -> int:
    from core.workspace.runs import check_run, read_run

    check_run(args.run)  # a mistyped folder is reported at once, before TensorFlow loads
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1 (got {args.top_k}).")
    ds = None
    if args.data:
        ds = dataset_from(args.data, args._tmp)
    elif records.exists(trained_on := read_run(args.run).dataset_id):
        # The dataset the run was trained on is still saved: its held-out images, read from its record, with
        # no rescan of the folder.
        ds = datasets.open_dataset(trained_on, version=read_run(args.run).dataset_version)  # the one it trained on
        print(f"evaluating on the saved dataset {ds.title} ({ds.id}), version {ds.version}", file=sys.stderr)
    from core.evaluate.evaluation import FILE, evaluate_run

    ev = evaluate_run(args.run, ds, top_k=args.top_k, progress=bar_progress("classifying", "img"), user=access.OPERATOR)
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
    _print_none_of_these(ev.none_of_these)
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


def _print_none_of_these(report: dict) -> None:
    """The evaluation's "none of these" lines (core.evaluate.none_of_these)."""
    if not report:
        return
    if not report.get("available"):
        print(f"none of these: the run cannot say: {report.get('reason', '')}")
        return
    inside = report["inside"]
    print(f"none of these above score {report['threshold']:.4g} (target false alarms {report['rate']:.0%}): "
          f"{inside['flagged']:.1%} of these {inside['images']} images flagged")  # fmt: skip
    for row in report["sources"]:
        auroc = "" if row["auroc"] is None else f", AUROC {row['auroc']:.3f}"
        print(f"  {row['label']}: {row['flagged']:.0%} of {row['images']} flagged{auroc}")


def add_label_issues(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder saved by train")
    p.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold predictions (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")


def run_label_issues(args) -> int:
    from core.evaluate.label_issues import FILE, find_label_issues
    from core.workspace.runs import check_run, find_run

    if not Path(args.run).exists() and (run := find_run(args.run)) is not None:
        args.run = str(run.path)  # a run's id (its folder's name in the runs folder) works too
    check_run(args.run)  # a mistyped folder is reported at once, before TensorFlow loads
    bars = {"features": ("frozen layers, once per image", "img"), "folds": ("out-of-fold predictions", "fold")}
    progress = {name: bar_progress(desc, unit) for name, (desc, unit) in bars.items()}
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
        print_table(header, rows, indent="  ")
    print(f"saved to {Path(args.run) / FILE}")
    return 0


COMMANDS = (
    Command("predict", "classify images with a saved run", add_predict, run_predict),
    Command(
        "evaluate",
        "score a saved run on held-out images: accuracy, confusion, worst mistakes",
        add_evaluate,
        run_evaluate,
    ),
    Command(
        "label-issues",
        "suspected label errors among a run's training images, found by cleanlab",
        add_label_issues,
        run_label_issues,
    ),
)
