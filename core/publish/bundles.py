"""Export bundles as the pages see them: where a run's export lives, its parity report, a zip for download.

    bundle = saved_bundle(run_dir)           # the run's export folder made by the app, or None
    report = load_report(bundle)             # parity.json: one row per export and input, with every disagreement
    parity_markdown(report)                  # the report as the bundle's PARITY.md
    parse_formats("saved_model,litert-int8") # ("saved_model", "litert-int8"); today's names (savedmodel) too

No TensorFlow here (``core.publish.export`` makes the bundles): a page reads a report without loading a model.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

from core.util.errors import UserError
from core.workspace import runs

FORMATS = ("saved_model", "litert", "litert-fp16", "litert-int8", "onnx")  # in the order they are made
# Earlier names of the formats, still accepted (a job queued before the rename, a script): -> the format's name
ALIASES = {"savedmodel": "saved_model", "saved-model": "saved_model", "tflite": "litert", "litert_fp16": "litert-fp16",
           "litert_int8": "litert-int8", "int8": "litert-int8", "fp16": "litert-fp16"}  # fmt: skip
# Where each format lives in the bundle (the SavedModel is a folder)
FILES = {"saved_model": "savedmodel", "litert": "model.tflite", "litert-fp16": "model_fp16.tflite",
         "litert-int8": "model_int8.tflite", "onnx": "model.onnx"}  # fmt: skip
PIXELS_TARGET = 1e-5  # float32 exports against the app on the same decoded pixels
BYTES_TARGET = 1e-3  # the SavedModel from encoded bytes (its own decoder) against the app from the same file
# The "none of these" score against the app's, relative: |export - app| / max(1, threshold, |app|). Float32
# rounding in another runtime's matrix products moves the score by ~2e-5 of it (the score is a difference of
# squared norms); from encoded bytes a decoder a level off moves the features themselves.
SCORE_PIXELS_TARGET = 1e-4
SCORE_BYTES_TARGET = 1e-2
PROBABILITIES, SCORE, FLAG = "probabilities", "none_of_these_score", "none_of_these"  # the exports' output names
BUNDLE_MARKER = "bundle.json"


class ExportError(UserError):
    """An export that cannot be made: where to write, which run, which format."""


def parse_formats(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """The formats asked for, by name or earlier name, in the order they are made (None or "all": every one).

    Raises:
        ExportError: an unknown name, or none at all.
    """
    if names is None:
        return FORMATS
    items = names.split(",") if isinstance(names, str) else list(names)
    wanted = [str(n).strip().lower() for n in items if str(n).strip()]
    if "all" in wanted:
        return FORMATS
    unknown = [n for n in wanted if ALIASES.get(n, n) not in FORMATS]
    if unknown or not wanted:
        raise ExportError(f"Unknown export format {', '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}.")
    chosen = {ALIASES.get(n, n) for n in wanted}
    return tuple(f for f in FORMATS if f in chosen)


def exports_dir(run_dir: str | os.PathLike) -> Path:
    """Where the app keeps a run's export: inside the run's folder, so it is everyone's and goes with the run."""
    return Path(run_dir) / "exports"


def saved_bundle(run_dir: str | os.PathLike) -> Path | None:
    """The run's export made by the app, or None."""
    path = exports_dir(run_dir) / Path(run_dir).name
    return path if (path / BUNDLE_MARKER).is_file() and (path / "parity.json").is_file() else None


def bundle_zip(bundle: str | os.PathLike) -> bytes:
    """The bundle folder as a zip for download (models are already compressed: stored, not deflated)."""
    import zipfile

    bundle = Path(bundle)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, f"{bundle.name}/{path.relative_to(bundle)}")
    return buf.getvalue()


def parity_markdown(report: dict) -> str:
    scored = any(c.get("none_of_these_agreement") is not None for c in report["checks"])
    lines = [
        f"# Parity: {report['run']}",
        "",
        f"Each export was run in its own runtime on {report['images']} and compared with the app's probabilities. "
        f"Targets: 100 % top-1 agreement; a probability difference of at most {PIXELS_TARGET:g} on decoded pixels "
        f"(float32) and {BYTES_TARGET:g} from encoded bytes. float16 and int8 are reported only.",
        "",
    ]
    if scored:
        lines += [_none_of_these_words(report), ""]
    extra = " none-of-these agreement | largest score difference | score target |" if scored else ""
    lines += [f"| export | input | images | top-1 agreement | largest difference | target |{extra} result |",
              "|---|---|---:|---:|---:|---:|" + "---:|---:|---:|" * scored + "---|"]  # fmt: skip
    for c in report["checks"]:
        target = "report only" if c["target"] is None else f"{c['target']:g}"
        result = "ok" if c["passed"] else "**MISSED: do not ship**"
        cells = [c["format"], c["input"], str(c["images"]), f"{c['top1_agreement']:.1%}", f"{c['max_abs_diff']:.2e}",
                 target]  # fmt: skip
        if scored:
            agreement, diff = c.get("none_of_these_agreement"), c.get("max_score_diff")
            cells += ["—" if agreement is None else f"{agreement:.1%}", "—" if diff is None else f"{diff:.2e}",
                      "report only" if c.get("score_target") is None else f"{c['score_target']:g}"]  # fmt: skip
        lines.append("| " + " | ".join([*cells, result]) + " |")
    for c in report["checks"]:
        for what, rows in (("differ", c["disagreements"]), ("differ on “none of these”", c.get("score_disagreements"))):
            if rows:
                lines += ["", f"## {c['format']} ({c['input']}): {len(rows)} images {what}", ""]
                lines += [f"- {d['image']}: app {d['app']}, export {d['export']}, difference "
                          f"{'—' if d['diff'] is None else format(d['diff'], '.2e')} — {d['why']}"
                          for d in rows]  # fmt: skip
    if report["skipped"]:
        lines += ["", "Left out (the app itself refuses them):", ""] + [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def _none_of_these_words(report: dict) -> str:
    n = report.get("none_of_these") or {}
    threshold = f" (the run's threshold: {n['threshold']:.6g})" if n.get("threshold") is not None else ""
    return (
        f"“None of these”: each export's score against the app's, and its flag (score above the threshold{threshold})."
        f" Targets for float32: the same flag on every image; a score difference of at most {SCORE_PIXELS_TARGET:g} "
        f"on decoded pixels and {SCORE_BYTES_TARGET:g} from encoded bytes, relative to the larger of the threshold, "
        "the app's score and 1. float16 and int8 are reported only."
    )


def load_report(bundle: str | os.PathLike) -> dict:
    """The parity report of a bundle folder."""
    return runs.read_json(Path(bundle) / "parity.json")
