"""Exports of a saved run, each with its preprocessing inside and checked against the app before it is offered.

    bundle = export_run("runs/2026…-ants", "exports", formats=("savedmodel", "litert", "onnx"))
    for check in bundle.checks:
        print(check.format, check.top1_agreement, check.max_abs_diff, check.passed)

One folder per export (``<out>/<run-id>/``): ``model.keras`` as trained; ``savedmodel/`` for TensorFlow Serving,
whose ``serving_default`` takes encoded images (JPEG/PNG/GIF/BMP bytes) and runs decode → the run's
crop/pad/stretch → resize → the model in its own graph, with ``pixels`` for decoded RGB of any size and
``square`` for the model's square input; ``model.tflite`` (LiteRT, float32; ``model_int8.tflite`` with dynamic-range
int8 weights on request) and ``model.onnx`` taking the square uint8 image, the normalisation inside; ``labels.txt``;
``preprocessing.json`` with the exact steps; ``parity.json`` / ``PARITY.md``; the model card; ``examples/``.

All go through Keras' own ``Model.export`` (``ExportArchive`` for the SavedModel's several signatures). The crop,
pad, stretch and resize are ``core.model.geometry``'s ops in the app and in the SavedModel's graph alike, so the parity
check compares one implementation with itself in another runtime: every export is run in its own runtime
(``tf.saved_model.load``, the LiteRT interpreter, ``onnxruntime``) on the run's validation images plus a few made
images of odd shapes, and compared with the app's probabilities. Float32 targets: 100 % top-1 and at most 1e-5 on
decoded pixels, 1e-3 from encoded bytes. An export that misses its target is flagged in the report, the bundle and
the page; int8 is reported, not held to a float32 target.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from core.imaging import spec as preprocessing
from core.model import calibration, geometry
from core.model.predict import Run, load_run
from core.publish.bundles import BUNDLE_MARKER, BYTES_TARGET, FORMATS, PIXELS_TARGET, parity_markdown
from core.publish.card import render
from core.publish.parity import MAX_IMAGES, Check, compare, parity_files, samples, why_bytes
from core.publish.runtimes import LiteRTRuntime, OnnxRuntime, SavedModelRuntime, batched
from core.util.errors import UserError
from core.util.files import package_versions, sha256_of
from core.workspace import access, runs

PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "onnx", "onnxruntime", "tf2onnx", "ai-edge-litert")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class ExportError(UserError):
    """An export that cannot be made: where to write, which run, which format."""


@dataclass
class Bundle:
    path: Path
    checks: list[Check]
    files: dict[str, int]  # file name (relative) -> bytes on disk
    images_from: str  # where the parity images came from, in words

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


# ---------------------------------------------------------------------------------------------- the exports


def _outputs(probs: tf.Tensor, classes: tf.Tensor, threshold: float) -> dict[str, tf.Tensor]:
    order = tf.argsort(probs, axis=-1, direction="DESCENDING", stable=True)
    scores = tf.gather(probs, order, batch_dims=1)
    names = tf.gather(classes, order)
    return {
        "label": names[:, 0],  # the most likely class
        "confidence": scores[:, 0],
        "sure": scores[:, 0] >= threshold,  # False: the app says "not sure" (below the run's threshold)
        "classes": names,  # every class, most likely first
        "scores": scores,
        "probabilities": probs,  # in labels.txt order
    }


def write_savedmodel(run: Run, path: Path) -> None:
    """A SavedModel for TensorFlow Serving with three signatures (bytes, pixels of any size, the square input)."""
    size, resize = run.config.image_size, run.config.resize
    model = run.model
    classes = tf.constant(run.classes)
    threshold = float(calibration.threshold_of(run.path) or 0.0)

    def from_square(square):
        return _outputs(model(square, training=False), classes, threshold)

    def from_pixels(pixels):
        return from_square(geometry.square(pixels, size, resize))

    def from_bytes(encoded):
        squares = tf.map_fn(
            lambda data: geometry.square(geometry.decode(data, size), size, resize),
            encoded,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
        )
        return from_square(squares)

    # No archive.track(model): the endpoints track the variables they use, and track() would store every weight a
    # second time (keras-team/keras#23553: twice the size on disk and in TensorFlow Serving's memory).
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", from_bytes, [tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("pixels", from_pixels, [tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")])
    archive.add_endpoint("square", from_square, [tf.TensorSpec([None, size, size, 3], tf.uint8, name="square")])
    archive.write_out(str(path), verbose=False)


def write_litert(run: Run, path: Path, int8: bool = False) -> None:
    kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT]} if int8 else {}  # dynamic range: int8 weights
    run.model.export(str(path), format="litert", verbose=False, **kwargs)


def write_onnx(run: Run, path: Path) -> None:
    import onnx

    run.model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    for key, value in {
        "labels": json.dumps(run.classes),
        "preprocessing": "core.imaging.spec.preprocessing_spec",
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


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
    formats: Sequence[str] | None = FORMATS,
    int8: bool = False,
    limit: int = MAX_IMAGES,
    progress: Progress | None = None,
    user: str = access.GUEST,
) -> Bundle:
    """Export a saved run into ``out_dir/<run-id>/`` and check every export against the app.

    An export replaces the run's earlier one, so only the run's owner or an admin may (core.workspace.access); the
    bundle records who made it.

    Raises:
        NotAllowed: ``user`` may not change the run.
        ExportError / UserError: an unknown format, a folder that cannot be written, a run that is not a run or
            whose model cannot be loaded.

    Long: one staging folder from the first format to the bundle's rename, with the progress and stop checks
    between formats; each format is a call already.
    """
    formats = FORMATS if formats is None else tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"Unknown export format {', '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}.")
    progress = progress or (lambda stage, done, total: None)
    info = runs.read_run(run_dir)  # UserError for a missing or damaged run
    access.check(user, info.owner, f"export the run {info.id}")
    run = load_run(run_dir)
    target = _bundle_dir(out_dir, run.path.name)
    size = run.config.image_size
    work = Path(tempfile.mkdtemp(prefix=f".{run.path.name}-", dir=target.parent))
    try:
        progress("reading", 0, 1)
        files, images_from = parity_files(run, limit)
        checked, skipped = samples(run, files)
        names = [s.name for s in checked]
        squares = np.stack([s.square for s in checked])
        app = run.probabilities(squares)  # the app's own answers: the same model, the same preprocessing
        progress("reading", 1, 1)
        checks: list[Check] = []
        steps = [("savedmodel", False)] * ("savedmodel" in formats) + [("litert", False)] * ("litert" in formats)
        steps += [("litert", True)] * ("litert" in formats and int8) + [("onnx", False)] * ("onnx" in formats)
        for n, (fmt, quantised) in enumerate(steps):
            label = "litert-int8" if quantised else fmt
            progress(f"exporting {label}", n, len(steps))
            if fmt == "savedmodel":
                write_savedmodel(run, work / "savedmodel")
                rt = SavedModelRuntime(work / "savedmodel")
                pixels = np.stack([rt.from_pixels(s.pixels) for s in checked])
                checks.append(compare("savedmodel", "decoded pixels", names, app, pixels, run.classes, PIXELS_TARGET))
                encoded = rt.from_bytes([s.data for s in checked])
                checks.append(compare("savedmodel", "encoded bytes", names, app, encoded, run.classes, BYTES_TARGET,
                                      lambda i: why_bytes(checked[i], size)))  # fmt: skip
            elif fmt == "litert":
                path = work / ("model_int8.tflite" if quantised else "model.tflite")
                write_litert(run, path, int8=quantised)
                got = batched(LiteRTRuntime(path), squares)
                checks.append(compare(label, "square uint8", names, app, got, run.classes,
                                      None if quantised else PIXELS_TARGET))  # fmt: skip
            else:
                write_onnx(run, work / "model.onnx")
                got = batched(OnnxRuntime(work / "model.onnx"), squares)
                checks.append(compare("onnx", "square uint8", names, app, got, run.classes, PIXELS_TARGET))
        progress("writing the bundle", 0, 1)
        _write_bundle(run, work, checks, images_from, skipped, formats, int8, user)
        if target.exists():
            shutil.rmtree(target)  # an earlier export of this run (its marker was checked)
        os.replace(work, target)
        progress("writing the bundle", 1, 1)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    sizes = {str(p.relative_to(target)): p.stat().st_size for p in sorted(target.rglob("*")) if p.is_file()}
    return Bundle(target, checks, sizes, images_from)


def _write_bundle(run: Run, work: Path, checks: list[Check], images_from: str, skipped: list[str],
                  formats: Sequence[str], int8: bool, user: str) -> None:  # fmt: skip
    shutil.copy2(run.path / "model.keras", work / "model.keras")
    (work / "labels.txt").write_text("".join(f"{c}\n" for c in run.classes))
    threshold = calibration.threshold_of(run.path)
    spec = preprocessing.preprocessing_spec(run.config.image_size, run.config.resize)
    spec["where"] = {
        "savedmodel": "serving_default: every step, from the encoded bytes (TensorFlow's decoder, made to give "
        "Pillow's pixels; JPEG EXIF orientation applied; WebP and TIFF are not read); pixels: from the geometry on; "
        "square: the model alone",
        "litert": "the model alone: give it the square uint8 image (geometry done by the caller)",
        "onnx": "the model alone: give it the square uint8 image (geometry done by the caller)",
        "keras": "model.keras: the model alone, as trained (load with keras.saving.load_model, safe_mode on)",
    }
    spec["not_sure_threshold"] = threshold
    runs.write_json(work / "preprocessing.json", spec)
    report = {
        "run": run.path.name,
        "classes": run.classes,
        "images": images_from,
        "skipped": skipped,
        "targets": {"decoded pixels": PIXELS_TARGET, "encoded bytes": BYTES_TARGET, "top1_agreement": 1.0},
        "passed": all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
    }
    runs.write_json(work / "parity.json", report)
    (work / "PARITY.md").write_text(parity_markdown(report))
    rows = [{"format": c.format, "input": c.input, "images": c.images, "top1_agreement": c.top1_agreement,
             "max_abs_diff": c.max_abs_diff, "passed": c.passed} for c in checks]  # fmt: skip
    render.write(run.path, work, parity=rows)
    _write_examples(run, work / "examples", formats, int8)
    digests = {str(p.relative_to(work)): sha256_of(p) for p in sorted(work.rglob("*")) if p.is_file()}
    versions = {k: v for k, v in package_versions(PACKAGES).items() if v}
    runs.write_json(work / BUNDLE_MARKER, {
        "format": "vgg16-classifier-export", "run": run.path.name, "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": versions, "sha256": digests, "passed": report["passed"], "by": user,
    })  # fmt: skip


def _write_examples(run: Run, folder: Path, formats: Sequence[str], int8: bool) -> None:
    folder.mkdir()
    size = run.config.image_size
    step = {
        "crop": f"ImageOps.fit(im, ({size}, {size}), Image.Resampling.BILINEAR)",
        "pad": f"ImageOps.pad(im, ({size}, {size}), Image.Resampling.BILINEAR, color={preprocessing.PAD_COLOR})",
        "stretch": f"im.resize(({size}, {size}), Image.Resampling.BILINEAR)",
    }[run.config.resize]
    square = (
        "import numpy as np\nfrom PIL import Image, ImageOps\n\n"
        f"# The model's input: {size} x {size} uint8 RGB after the run's '{run.config.resize}' (preprocessing.json).\n"
        "# Pillow's antialiased bilinear comes within a level or two of the app's resize (tf.image.resize);\n"
        "# for the app's exact pixels, use the SavedModel's 'pixels' signature or core.model.geometry.square.\n"
        "im = ImageOps.exif_transpose(Image.open('photo.jpg')).convert('RGB')\n"
        f"image = np.asarray({step}, dtype=np.uint8)[None]\n"
        "labels = open('labels.txt').read().splitlines()\n"
    )
    if "savedmodel" in formats:
        (folder / "savedmodel.py").write_text(
            "import tensorflow as tf\n\n"
            "model = tf.saved_model.load('savedmodel')\n"
            "out = model.signatures['serving_default'](images=tf.constant([open('photo.jpg', 'rb').read()]))\n"
            "print(out['label'][0].numpy().decode(), float(out['confidence'][0]), bool(out['sure'][0]))\n"
        )
        (folder / "tensorflow_serving.md").write_text(
            "# Serve with TensorFlow Serving\n\n"
            "```sh\n"
            "mkdir -p serving/classifier && cp -r savedmodel serving/classifier/1\n"
            'docker run -p 8501:8501 -v "$PWD/serving/classifier:/models/classifier" '
            "-e MODEL_NAME=classifier tensorflow/serving\n"
            "# encoded bytes go base64-encoded under the key b64\n"
            'curl -s localhost:8501/v1/models/classifier:predict -d "{\\"instances\\": '
            '[{\\"b64\\": \\"$(base64 -w0 photo.jpg)\\"}]}"\n'
            "```\n\n"
            'The answer holds `label`, `confidence`, `sure` (false: below the run\'s "not sure" threshold), '
            "`classes` and `scores` (most likely first) and `probabilities` (in `labels.txt` order).\n"
        )
    if "litert" in formats:
        names = ["model.tflite"] + ["model_int8.tflite"] * int8
        (folder / "litert.py").write_text(
            square + "from ai_edge_litert.interpreter import Interpreter\n\n"
            f"interpreter = Interpreter(model_path='{names[0]}')\n"
            "interpreter.allocate_tensors()\n"
            "interpreter.set_tensor(interpreter.get_input_details()[0]['index'], image)\n"
            "interpreter.invoke()\n"
            "probs = interpreter.get_tensor(interpreter.get_output_details()[0]['index'])[0]\n"
            "print(labels[probs.argmax()], float(probs.max()))\n"
        )
    if "onnx" in formats:
        (folder / "onnx.py").write_text(
            square + "import onnxruntime\n\n"
            "session = onnxruntime.InferenceSession('model.onnx')\n"
            "probs = session.run(None, {session.get_inputs()[0].name: image})[0][0]\n"
            "print(labels[probs.argmax()], float(probs.max()))\n"
        )
