"""Export bundles as the pages see them: where a run's export lives, its parity report, a zip for download.

    bundle = saved_bundle(run_dir)           # the run's export folder made by the app, or None
    report = load_report(bundle)             # parity.json: one row per export and input, with every disagreement
    parity_markdown(report)                  # the report as the bundle's PARITY.md

No TensorFlow here (``core.publish.export`` makes the bundles): a page reads a report without loading a model.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from core.workspace import runs

FORMATS = ("savedmodel", "litert", "onnx")
PIXELS_TARGET = 1e-5  # float32 exports against the app on the same decoded pixels
BYTES_TARGET = 1e-3  # the SavedModel from encoded bytes (its own decoder) against the app from the same file
BUNDLE_MARKER = "bundle.json"


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
    lines = [
        f"# Parity: {report['run']}",
        "",
        f"Each export was run in its own runtime on {report['images']} and compared with the app's probabilities. "
        f"Targets: 100 % top-1 agreement; a probability difference of at most {PIXELS_TARGET:g} on decoded pixels "
        f"(float32) and {BYTES_TARGET:g} from encoded bytes. int8 is reported only.",
        "",
        "| export | input | images | top-1 agreement | largest difference | target | result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for c in report["checks"]:
        target = "report only" if c["target"] is None else f"{c['target']:g}"
        result = "ok" if c["passed"] else "**MISSED: do not ship**"
        lines.append(f"| {c['format']} | {c['input']} | {c['images']} | {c['top1_agreement']:.1%} | "
                     f"{c['max_abs_diff']:.2e} | {target} | {result} |")  # fmt: skip
    for c in report["checks"]:
        if c["disagreements"]:
            lines += ["", f"## {c['format']} ({c['input']}): {len(c['disagreements'])} images differ", ""]
            lines += [f"- {d['image']}: app {d['app']}, export {d['export']}, difference {d['diff']:.2e} — {d['why']}"
                      for d in c["disagreements"]]  # fmt: skip
    if report["skipped"]:
        lines += ["", "Left out (the app itself refuses them):", ""] + [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def load_report(bundle: str | os.PathLike) -> dict:
    """The parity report of a bundle folder."""
    return runs.read_json(Path(bundle) / "parity.json")
