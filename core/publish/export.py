"""Exports of a saved run, each with its preprocessing inside and checked against the app before it is offered.

    bundle = export_run("runs/2026…-ants", "exports", formats=("saved_model", "litert", "litert-int8", "onnx"))
    for check in bundle.checks:
        print(check.format, check.top1_agreement, check.max_abs_diff, check.passed)
    bundle.deployment["formats"]     # size, latency, agreement, accuracy per class, ECE of each (report.json)

One folder per export (``<out>/<run-id>/``): ``model.keras`` as trained; ``savedmodel/`` for TensorFlow Serving,
whose ``serving_default`` takes encoded images (JPEG/PNG/GIF/BMP bytes) and runs decode → the run's
crop/pad/stretch → resize → the model in its own graph, with ``pixels`` for decoded RGB of any size and
``square`` for the model's square input; ``model.tflite`` (LiteRT, float32), ``model_fp16.tflite`` (float16
weights), ``model_int8.tflite`` (full-integer int8) and ``model.onnx`` taking the square uint8 image, the
normalisation inside, and answering float32 probabilities; ``labels.txt``; ``preprocessing.json`` with the exact
steps and each format's outputs; ``parity.json`` / ``PARITY.md``; ``report.json`` / ``REPORT.md`` (the deployment
report, ``core.publish.report``); the model card; ``examples/``. The files are written by ``core.publish.formats``.

A run that answers "none of these" (``core.model.ood``) is exported from its two-output model: each export also
answers the score (``none_of_these_score``; the SavedModel also ``none_of_these``, the score above the run's
threshold), the threshold is in preprocessing.json and none_of_these.json, and the parity check compares each
export's score and flag with the app's (float32: the same flag on every image, the score within 1e-4 of the larger
of the threshold and the app's score on decoded pixels, 1e-2 from encoded bytes; float16 and int8 reported). A run
that cannot say is exported with its one output.

``litert-int8`` is full-integer quantisation (weights and activations int8, calibrated on up to 100 of the run's
training images decoded as the app decodes them, ``core.publish.measure.representative``); it replaces the
dynamic-range file (int8 weights, float activations) that ``model_int8.tflite`` used to be: the same size on disk,
and integer-only arithmetic is what the phones and accelerators that want int8 run. The model keeps its uint8 input
and float32 probabilities out (quantise and dequantise at its edges). ``int8=True`` and the names of before
(``savedmodel``) still work (``core.publish.bundles.parse_formats``).

All go through Keras' own ``Model.export`` (``ExportArchive`` for the SavedModel's several signatures). The crop,
pad, stretch and resize are ``core.model.geometry``'s ops in the app and in the SavedModel's graph alike, so the parity
check compares one implementation with itself in another runtime: every export is run in its own runtime
(``tf.saved_model.load``, the LiteRT interpreter, ``onnxruntime``) on the run's validation images plus a few made
images of odd shapes, and compared with the app's probabilities. Float32 targets: 100 % top-1 and at most 1e-5 on
decoded pixels, 1e-3 from encoded bytes. An export that misses its target is flagged in the report, the bundle and
the page; float16 and int8 are reported, not held to a float32 target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import numpy as np

from core.model.predict import Run, load_run
from core.publish import measure, report
from core.publish.bundles import (
    BUNDLE_MARKER,
    BYTES_TARGET,
    FILES,
    FORMATS,
    PIXELS_TARGET,
    SCORE_BYTES_TARGET,
    SCORE_PIXELS_TARGET,
    ExportError,
    parity_markdown,
    parse_formats,
)
from core.publish.card import render
from core.publish.formats import scoring, write_examples, write_litert, write_onnx, write_savedmodel, write_steps
from core.publish.parity import MAX_IMAGES, Check, compare, held_out_labels, parity_files, samples, scores, why_bytes
from core.publish.runtimes import SavedModelRuntime, all_threads, batched, open_runtime
from core.util.files import package_versions, sha256_of
from core.workspace import access, runs

PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "onnx", "onnxruntime", "tf2onnx", "ai-edge-litert")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


# ExportError lives in core.publish.bundles (no TensorFlow), the writers in core.publish.formats
__all__ = ["Bundle", "ExportError", "export_run", "write_litert", "write_onnx", "write_savedmodel"]


@dataclass
class Bundle:
    path: Path
    checks: list[Check]
    files: dict[str, int]  # file name (relative) -> bytes on disk
    images_from: str  # where the parity images came from, in words
    deployment: dict | None = None  # the deployment report (report.json, core.publish.report)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


# ---------------------------------------------------------------------------------------------- the bundle


def _bundle_dir(out_dir: str | os.PathLike, run_id: str) -> Path:
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ExportError(f"Cannot write to {out}: {exc.strerror or exc}.") from None
    target = out / run_id
    if target.exists() and not (target / BUNDLE_MARKER).is_file():
        raise ExportError(f"{target} already exists and is not an export of this app: choose another folder.")
    return target


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] | str | None = FORMATS,
    int8: bool = False,
    limit: int = MAX_IMAGES,
    progress: Progress | None = None,
    user: str = access.GUEST,
) -> Bundle:
    """Export a saved run into ``out_dir/<run-id>/``, check every export against the app, and measure each one for
    the deployment report (``core.publish.report``).

    ``formats``: names of ``FORMATS`` or their earlier names (``savedmodel``); ``int8``: also ``litert-int8``
    when ``litert`` is chosen (the option of before). An export replaces the run's earlier one, so only the run's
    owner or an admin may (core.workspace.access); the bundle records who made it. Progress: ``reading``, then
    ``exporting <format>`` and ``timing <format>`` (the format's place among them), then ``writing the bundle``.

    Raises:
        NotAllowed: ``user`` may not change the run.
        ExportError / UserError: an unknown format, a folder that cannot be written, a run that is not a run or
            whose model cannot be loaded, an int8 export with no image of the run left to calibrate on.

    Long: one staging folder from the first format to the bundle's rename, with the progress and stop checks
    between formats; each format is a call already.
    """
    formats = parse_formats(formats)
    if int8 and "litert" in formats:
        formats = parse_formats([*formats, "litert-int8"])
    progress = progress or (lambda stage, done, total: None)
    info = runs.read_run(run_dir)  # UserError for a missing or damaged run
    access.check(user, info.owner, f"export the run {info.id}")
    run = load_run(run_dir)
    target = _bundle_dir(out_dir, run.path.name)
    work = Path(tempfile.mkdtemp(prefix=f".{run.path.name}-", dir=target.parent))
    try:
        progress("reading", 0, 1)
        files, images_from = parity_files(run, limit)
        checked, skipped = samples(run, files)
        squares = np.stack([s.square for s in checked])
        app, app_scores, _ = run.outputs(squares)  # the app's own answers: the same model and preprocessing
        scored, labels, scored_on = _scored(run, checked)
        progress("reading", 1, 1)
        checks: list[Check] = []
        rows, representative, calibration_images = [], None, None
        for n, fmt in enumerate(formats):
            progress(f"exporting {fmt}", n, len(formats))
            if fmt == "litert-int8":
                calibration_images, representative = measure.representative(run)
            path = work / FILES[fmt]
            _write(fmt, run, path, calibration_images)
            (got, got_scores), given = _check(fmt, path, run, checked, squares, (app, app_scores), checks)
            progress(f"timing {fmt}", n, len(formats))
            latency = measure.latency(fmt, path, squares[:1])
            flags = _flags(run, got_scores, app_scores, scored)
            rows.append(report.format_row(fmt, FILES[fmt], _bytes(path), given, got[scored], app[scored], labels,
                                          run.classes, latency, flags))  # fmt: skip
        deployment = report.deployment(run.path.name, run.classes, rows,
                                       report.scores(app[scored], labels, run.classes), scored_on, representative,
                                       all_threads(), _none_of_these(run, app_scores, scored))  # fmt: skip
        progress("writing the bundle", 0, 1)
        _write_bundle(run, work, checks, images_from, skipped, formats, user, deployment)
        if target.exists():
            shutil.rmtree(target)  # an earlier export of this run (its marker was checked)
        os.replace(work, target)
        progress("writing the bundle", 1, 1)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    sizes = {str(p.relative_to(target)): p.stat().st_size for p in sorted(target.rglob("*")) if p.is_file()}
    return Bundle(target, checks, sizes, images_from, deployment)


def _write(fmt: str, run: Run, path: Path, calibration_images: np.ndarray | None) -> None:
    if fmt == "saved_model":
        write_savedmodel(run, path)
    elif fmt == "onnx":
        write_onnx(run, path)
    else:
        weights = {"litert": "float32", "litert-fp16": "float16", "litert-int8": "int8"}[fmt]
        write_litert(run, path, weights, calibration_images)


def _check(fmt: str, path: Path, run: Run, checked: list, squares: np.ndarray, app: tuple,
           checks: list[Check]) -> tuple[tuple, str]:  # fmt: skip
    """Run the export in its runtime on the parity images, append its checks (probabilities, then "none of these"
    for a run that can say it: ``app`` holds the app's probabilities and scores); the export's probabilities and
    scores as deployed (the SavedModel: from the encoded files) and what it was given."""
    names, (probs, app_scores) = [s.name for s in checked], app
    threshold = run.ood.threshold if app_scores is not None else 0.0

    def check(given, got, target, score_target, why=None) -> None:
        row = compare(fmt, given, names, probs, got[0], run.classes, target, why)
        checks.append(scores(row, names, app_scores, got[1], threshold, score_target, why))

    if fmt != "saved_model":
        got = batched(open_runtime(fmt, path), squares)
        reported = fmt in ("litert-fp16", "litert-int8")  # reported only
        check("square uint8", got, None if reported else PIXELS_TARGET, None if reported else SCORE_PIXELS_TARGET)
        return got, "square uint8"
    rt = SavedModelRuntime(path)
    check("decoded pixels", rt.from_pixels([s.pixels for s in checked]), PIXELS_TARGET, SCORE_PIXELS_TARGET)
    encoded = rt.from_bytes([s.data for s in checked])
    check(
        "encoded bytes",
        encoded,
        BYTES_TARGET,
        SCORE_BYTES_TARGET,
        lambda i: why_bytes(checked[i], run.config.image_size),
    )
    return encoded, "encoded bytes"


def _flags(run: Run, got: np.ndarray | None, app: np.ndarray | None, index: np.ndarray) -> tuple | None:
    """(the export's flags or None, the app's) on the report's images; None for a run that cannot say."""
    if app is None:
        return None
    return (None if got is None else run.ood.flags(got[index])), run.ood.flags(app[index])


def _none_of_these(run: Run, app: np.ndarray | None, index: np.ndarray) -> dict | None:
    """What the reports say of the run's "none of these": its threshold and rate, the app's share flagged."""
    if app is None:
        return None
    state = run.ood
    flagged = float(np.mean(state.flags(app[index]))) if len(index) else None
    return {"method": state.method, "threshold": float(state.threshold), "rate": state.rate, "flagged": flagged}


def _scored(run: Run, checked: list) -> tuple[np.ndarray, np.ndarray, str]:
    """Which parity images the deployment report scores (the run's labelled held-out images), their classes, and
    the images in words; with none on this server, agreement alone, on the made images."""
    known, part = held_out_labels(run)
    index = [i for i, s in enumerate(checked) if s.name in known]
    if index:
        labels = np.array([known[checked[i].name] for i in index], dtype=np.int64)
        return np.array(index, dtype=np.int64), labels, f"{len(index)} {part} images"
    words = (f"{len(checked)} made images of odd sizes, agreement only (the run's {part} images are no longer on "
             "this server: no accuracy)")  # fmt: skip
    return np.arange(len(checked)), np.zeros(0, np.int64), words


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _write_bundle(run: Run, work: Path, checks: list[Check], images_from: str, skipped: list[str],
                  formats: Sequence[str], user: str, deployment: dict) -> None:  # fmt: skip
    shutil.copy2(run.path / "model.keras", work / "model.keras")
    (work / "labels.txt").write_text("".join(f"{c}\n" for c in run.classes))
    write_steps(run, work)  # preprocessing.json (and none_of_these.json)
    targets = {"decoded pixels": PIXELS_TARGET, "encoded bytes": BYTES_TARGET, "top1_agreement": 1.0}
    if scoring(run) is not None:  # relative score differences (core.publish.parity.scores)
        targets |= {"score, decoded pixels": SCORE_PIXELS_TARGET, "score, encoded bytes": SCORE_BYTES_TARGET,
                    "none_of_these_agreement": 1.0}  # fmt: skip
    parity_report = {
        "run": run.path.name,
        "classes": run.classes,
        "images": images_from,
        "skipped": skipped,
        "none_of_these": deployment.get("none_of_these"),
        "targets": targets,
        "passed": all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
    }
    runs.write_json(work / "parity.json", parity_report)
    (work / "PARITY.md").write_text(parity_markdown(parity_report))
    rows = [{"format": c.format, "input": c.input, "images": c.images, "top1_agreement": c.top1_agreement,
             "max_abs_diff": c.max_abs_diff, "none_of_these_agreement": c.none_of_these_agreement,
             "max_score_diff": c.max_score_diff, "passed": c.passed} for c in checks]  # fmt: skip
    runs.write_json(work / report.FILE, deployment)
    (work / report.MARKDOWN).write_text(report.report_markdown(deployment))
    render.write(run.path, work, parity=rows, deployment=deployment)
    write_examples(run, work / "examples", formats)
    digests = {str(p.relative_to(work)): sha256_of(p) for p in sorted(work.rglob("*")) if p.is_file()}
    versions = {k: v for k, v in package_versions(PACKAGES).items() if v}
    runs.write_json(work / BUNDLE_MARKER, {
        "format": "vgg16-classifier-export", "run": run.path.name, "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": versions, "sha256": digests, "passed": parity_report["passed"], "by": user,
    })  # fmt: skip
