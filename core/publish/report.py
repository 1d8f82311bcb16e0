"""The deployment report: for each export, its size, how fast it answers one image, how often it agrees with the app,
its accuracy per class and overall, its calibration error, and warnings in words where it loses against the app.

    row = format_row("onnx", "model.onnx", nbytes, "square uint8", probs, app, labels, classes, latency)
    report = deployment(run_id, classes, rows, app_scores, images="3 validation images", …)
    report_markdown(report)        # the bundle's REPORT.md (report.json holds the same as data)
    load_deployment(bundle)        # report.json of a bundle, or None for a bundle made before the report

Agreement, accuracy and ECE are measured on the run's labelled held-out images (its test images, else its
validation images, as the parity check takes them), each export given what it takes: the SavedModel the encoded
files (``serving_default``), the others the app's square image. The app's own figures are the Keras model as
``core.model.predict`` runs it, on the same images. ECE: ``core.model.calibration.ece`` (15 equal-width bins).

A run that answers "none of these" (``core.model.ood``) adds, per export, how often its flag (the score above the
run's threshold) agrees with the app's (``none_of_these_agreement``), and the run's threshold, rate and the share of
the images the app flags (``none_of_these``).

Warnings: a class that loses more than ``CLASS_POINTS`` points of accuracy against the app, or a top-1 agreement
(or a "none of these" agreement) below ``MIN_AGREEMENT``. Pure numpy, no TensorFlow: the pages read the report with
this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from core.model import calibration
from core.workspace import runs

FILE, MARKDOWN = "report.json", "REPORT.md"
CLASS_POINTS = 2.0  # a class losing more accuracy than this (percentage points) against the app is a warning
MIN_AGREEMENT = 0.99  # a top-1 agreement with the app below this is a warning
EPS = 1e-9  # "more than 2 points" on numbers that went through floats


def scores(probs, labels, classes: list[str]) -> dict[str, Any]:
    """Accuracy overall and per class (None for a class without images), and the expected calibration error."""
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if not len(y):
        return {"accuracy": None, "ece": None, "per_class": []}
    right = p.argmax(axis=1) == y
    per_class = [{"class": c, "images": int((y == k).sum()),
                  "accuracy": float(right[y == k].mean()) if (y == k).any() else None}
                 for k, c in enumerate(classes)]  # fmt: skip
    return {"accuracy": float(right.mean()), "ece": calibration.ece(p, y), "per_class": per_class}


def format_row(fmt: str, file: str, nbytes: int, given: str, probs, app, labels, classes: list[str],
               latency: list[dict], flags: tuple | None = None) -> dict[str, Any]:  # fmt: skip
    """One export's row: its file and size, latency rows (``core.publish.measure.latency``), and its scores on the
    images whose app probabilities are ``app`` and true classes ``labels`` (``probs``: the export's, same order).
    ``flags``: (the export's "none of these" flags or None for none, the app's) for a run that can say it: the
    row's ``none_of_these_agreement`` is the share of images where they agree (None: the run cannot say)."""
    p, a = np.asarray(probs), np.asarray(app)
    agreement = float((p.argmax(axis=1) == a.argmax(axis=1)).mean()) if len(p) else None
    row = {"format": fmt, "file": file, "bytes": int(nbytes), "input": given, "latency": latency,
           "agreement": agreement, "images": len(p), **scores(p, labels, classes)}  # fmt: skip
    if flags is not None:
        got, want = flags
        same = np.zeros(len(want), bool) if got is None else np.asarray(got) == np.asarray(want)
        row["none_of_these_agreement"] = float(same.mean()) if len(same) else None
    row["warnings"] = warnings_for(row, scores(a, labels, classes))
    return row


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def warnings_for(row: dict[str, Any], app: dict[str, Any]) -> list[str]:
    """The row's losses against the app in one sentence (none: an empty list).

    >>> warnings_for({"format": "litert-int8", "agreement": 0.975, "per_class": [
    ...     {"class": "bees", "accuracy": 0.868}]}, {"per_class": [{"class": "bees", "accuracy": 0.91}]})
    ["litert-int8: class 'bees' loses 4.2 points (91.0 % → 86.8 %); agreement 97.5 % is below 99 %"]
    """
    before = {c["class"]: c["accuracy"] for c in app.get("per_class", [])}
    parts = []
    for c in row.get("per_class", []):
        was, now = before.get(c["class"]), c["accuracy"]
        if was is not None and now is not None and 100 * (was - now) > CLASS_POINTS + EPS:
            parts.append(f"class '{c['class']}' loses {100 * (was - now):.1f} points ({_pct(was)} → {_pct(now)})")
    if row.get("agreement") is not None and row["agreement"] < MIN_AGREEMENT - EPS:
        parts.append(f"agreement {_pct(row['agreement'])} is below {100 * MIN_AGREEMENT:g} %")
    if (flags := row.get("none_of_these_agreement")) is not None and flags < MIN_AGREEMENT - EPS:
        parts.append(f"“none of these” agrees with the app on {_pct(flags)} of the images")
    return [f"{row['format']}: " + "; ".join(parts)] if parts else []


def deployment(run_id: str, classes: list[str], rows: list[dict], app: dict[str, Any], images: str,
               representative: str | None, threads: int,
               none_of_these: dict | None = None) -> dict[str, Any]:  # fmt: skip
    """The whole report, as report.json holds it. ``none_of_these``: the run's "none of these" (its method,
    threshold, rate and the share of these images the app flags), None for a run that cannot say."""
    return {
        "run": run_id,
        "classes": classes,
        "images": images,
        "app": app,
        "none_of_these": none_of_these,
        "representative": representative,
        "threads": {"one": 1, "all": threads},
        "latency": "the model alone on one square uint8 image (no decoding), median of the timed calls after a "
        "warm-up; the SavedModel's one-thread figure is timed in a fresh process (TensorFlow fixes its thread "
        "pools when it starts)",
        "thresholds": {"class_points": CLASS_POINTS, "agreement": MIN_AGREEMENT, "ece_bins": calibration.BINS},
        "formats": rows,
        "warnings": [w for r in rows for w in r["warnings"]],
    }


def p50(row: dict[str, Any], threads: str) -> float | None:
    """The row's median latency in ms on one thread (``"one"``) or every core (``"all"``)."""
    times = [t for t in row.get("latency", []) if (t["threads"] == 1) == (threads == "one")]
    return times[-1]["p50_ms"] if times else None


def table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The report as a header and rows of text, the app first: the same table in REPORT.md, the card, the page."""
    header = ["Format", "Size", "p50, 1 thread", f"p50, {report['threads']['all']} threads", "Agreement",
              "Accuracy", "ECE"]  # fmt: skip
    flags = report.get("none_of_these") is not None  # a column for a run that can say it
    header += ["None-of-these agreement"] * flags
    app = report["app"]
    rows = [["app (Keras)", "", "", "", "", _maybe(app.get("accuracy"), _pct), _maybe(app.get("ece"), _ece)]]
    rows[0] += [""] * flags
    for r in report["formats"]:
        ms = [_maybe(p50(r, t), lambda x: f"{x:.2f} ms") for t in ("one", "all")]
        rows.append([r["format"], f"{r['bytes'] / 1e6:,.1f} MB", *ms, _maybe(r.get("agreement"), _pct),
                     _maybe(r.get("accuracy"), _pct), _maybe(r.get("ece"), _ece)])  # fmt: skip
        rows[-1] += [_maybe(r.get("none_of_these_agreement"), _pct)] * flags
    return header, rows


def class_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Accuracy per class (rows) for the app and each export (columns), with each class's images."""
    columns = [report["app"], *report["formats"]]
    per = [{c["class"]: c for c in col.get("per_class", [])} for col in columns]
    header = ["Class", "Images", "app", *(r["format"] for r in report["formats"])]
    rows = [[c, str((per[0].get(c) or {}).get("images", "—")),
             *(_maybe((p.get(c) or {}).get("accuracy"), _pct) for p in per)] for c in report["classes"]]  # fmt: skip
    return header, rows


def _ece(x: float) -> str:
    return f"{x:.3f}"


def _maybe(x: Any, fmt) -> str:
    return "—" if x is None else fmt(x)


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Deployment: {report['run']}", "",
             f"Agreement with the app, accuracy and expected calibration error ({report['thresholds']['ece_bins']} "
             f"bins) on {report['images']}. Latency: {report['latency']}.", ""]  # fmt: skip
    if report.get("representative"):
        lines += [f"litert-int8 (full-integer) was calibrated on {report['representative']}.", ""]
    if n := report.get("none_of_these"):
        lines += [none_of_these_words(n), ""]
    for header, rows in (table(report), class_table(report)):
        lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows] + [""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines).rstrip() + "\n"


def none_of_these_words(n: dict[str, Any]) -> str:
    """The report's "none of these" in a sentence (REPORT.md, the card, the page)."""
    flagged = "" if n.get("flagged") is None else f"; the app says it of {_pct(n['flagged'])} of these images"
    return (
        f"“None of these”: an image scoring above {n['threshold']:.6g} is unlike every class (a threshold chosen so "
        f"that {_pct(n['rate'])} of the validation images are called so by mistake){flagged}. None-of-these "
        "agreement: the share of images on which an export says it exactly when the app does."
    )


def load_deployment(bundle: str | os.PathLike) -> dict[str, Any] | None:
    """The deployment report of a bundle folder, or None for a bundle made before there was one."""
    path = Path(bundle) / FILE
    return runs.read_json(path) if path.is_file() else None
