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
pad, stretch and resize are ``core.geometry``'s ops in the app and in the SavedModel's graph alike, so the parity
check compares one implementation with itself in another runtime: every export is run in its own runtime
(``tf.saved_model.load``, the LiteRT interpreter, ``onnxruntime``) on the run's validation images plus a few made
images of odd shapes, and compared with the app's probabilities. Float32 targets: 100 % top-1 and at most 1e-5 on
decoded pixels, 1e-3 from encoded bytes. An export that misses its target is flagged in the report, the bundle and
the page; int8 is reported, not held to a float32 target.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from core import access, calibration, geometry, images, model_card, runs
from core.bundles import BUNDLE_MARKER, BYTES_TARGET, FORMATS, PIXELS_TARGET, parity_markdown
from core.errors import UserError
from core.predict import Run, load_run

MAX_IMAGES = 200  # validation images checked per export: enough to find a systematic difference, quick on a CPU
BATCH = 16
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class ExportError(UserError):
    """An export that cannot be made: where to write, which run, which format."""


@dataclass
class Check:
    """One row of the parity report: an export in its runtime against the app, on the same images."""

    format: str  # savedmodel, litert, litert-int8, onnx
    input: str  # what the export was given: "encoded bytes", "decoded pixels" or "square uint8"
    images: int
    top1_agreement: float
    max_abs_diff: float
    target: float | None  # the largest probability difference allowed; None: reported only (int8)
    disagreements: list[dict] = field(default_factory=list)  # {"image", "app", "export", "diff", "why"}

    @property
    def passed(self) -> bool:
        return self.target is None or (self.top1_agreement == 1.0 and self.max_abs_diff <= self.target)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


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
    for key, value in {"labels": json.dumps(run.classes), "preprocessing": "core.images.preprocessing_spec"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


# ---------------------------------------------------------------------------------------------- runtimes


class SavedModelRuntime:
    def __init__(self, path: Path):
        self.loaded = tf.saved_model.load(str(path))

    def from_bytes(self, data: Sequence[bytes]) -> np.ndarray:
        fn = self.loaded.signatures["serving_default"]
        return np.concatenate([fn(images=tf.constant(list(data[i : i + BATCH])))["probabilities"].numpy()
                               for i in range(0, len(data), BATCH)])  # fmt: skip

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.loaded.signatures["pixels"](pixels=tf.constant(pixels[None]))["probabilities"].numpy()[0]


class LiteRTRuntime:
    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)  # default: one
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = 0

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        if len(squares) != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(squares.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(squares)
        self.interpreter.set_tensor(self.input, squares)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output))


class OnnxRuntime:
    def __init__(self, path: Path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: squares})[0]


def batched(fn: Callable[[np.ndarray], np.ndarray], squares: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(squares[i : i + BATCH]) for i in range(0, len(squares), BATCH)])


# ---------------------------------------------------------------------------------------------- parity images


@dataclass
class Sample:
    name: str
    data: bytes  # the encoded file
    pixels: np.ndarray  # decoded as the app decodes (Pillow)
    square: np.ndarray  # the app's model input


def made_images(seed: int = 0) -> list[tuple[str, bytes]]:
    """Images of odd sizes and aspect ratios, in JPEG and PNG (with transparency and grey), made here."""
    rng = np.random.default_rng(seed)
    out = []
    for w, h, fmt, mode in [(640, 480, "JPEG", "RGB"), (300, 900, "JPEG", "RGB"), (1000, 37, "PNG", "RGB"),
                            (13, 17, "PNG", "RGB"), (257, 255, "PNG", "RGBA"), (120, 80, "PNG", "L"),
                            (2000, 1500, "JPEG", "RGB"), (224, 224, "JPEG", "RGB")]:  # fmt: skip
        base = rng.integers(0, 256, (4, 4, len(mode)), dtype=np.uint8)  # smooth colour fields, as photos are
        im = Image.fromarray(base.squeeze() if mode == "L" else base, mode).resize((w, h), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append((f"made {w}x{h} {mode} {fmt.lower()}", buf.getvalue()))
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo stored sideways: shown (and classified) turned 90° clockwise
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    out.append(("made 224x224 jpeg, EXIF orientation 6", buf.getvalue()))
    return out


def parity_files(run: Run, limit: int = MAX_IMAGES) -> tuple[list[tuple[str, bytes]], str]:
    """(name, bytes) of the run's validation images (at most ``limit``) plus made ones, and where they came from."""
    from core.evaluate import saved_images_root

    made = made_images()
    root = saved_images_root(run.path)
    if root is None:
        return made, f"{len(made)} made images of odd sizes (the run's validation images are no longer on this server)"
    saved = runs.read_json(run.path / "split.json")
    listed = saved.get("test") or saved.get("val") or []
    which = "test" if saved.get("test") else "validation"
    chosen = listed[:limit]
    files = [(rel, (root / rel).read_bytes()) for rel in chosen]
    more = f" (the first {len(chosen)} of {len(listed)})" if len(listed) > len(chosen) else ""
    return files + made, f"{len(chosen)} {which} images{more} and {len(made)} made images of odd sizes"


def samples(run: Run, files: list[tuple[str, bytes]]) -> tuple[list[Sample], list[str]]:
    """Decode as the app does; files the app itself refuses are left out (and named)."""
    size, resize = run.config.image_size, run.config.resize
    out, skipped = [], []
    for name, data in files:
        try:
            pixels = images.decode(data, size)
        except images.ImageError as exc:
            skipped.append(f"{name}: {exc}")
            continue
        out.append(Sample(name, data, pixels, geometry.square_image(pixels, size, resize)))
    return out, skipped


# ---------------------------------------------------------------------------------------------- comparing


def _why_bytes(sample: Sample, size: int) -> str:
    try:
        tf_pixels = geometry.decode(tf.constant(sample.data), size).numpy()
    except tf.errors.OpError as exc:
        return f"TensorFlow cannot decode this file ({exc.message.splitlines()[0][:80]})"
    if tf_pixels.shape != sample.pixels.shape:
        (th, tw), (ph, pw) = tf_pixels.shape[:2], sample.pixels.shape[:2]
        return f"decoded to {tw}x{th} by TensorFlow, {pw}x{ph} by Pillow"
    diff = int(np.abs(tf_pixels.astype(int) - sample.pixels.astype(int)).max())
    if diff:
        return f"TensorFlow's decoder differs from Pillow's by up to {diff} levels on this file"
    return "float rounding in the runtime (the decoded pixels are identical)"


def compare(
    fmt: str, given: str, names: list[str], app: np.ndarray, got: np.ndarray, classes: list[str],
    target: float | None, why: Callable[[int], str] | None = None,
) -> Check:  # fmt: skip
    """Top-1 agreement and the largest probability difference, and every image that misses either, with why."""
    diffs = np.abs(app.astype(np.float64) - got.astype(np.float64)).max(axis=1) if len(app) else np.zeros(0)
    same = app.argmax(axis=1) == got.argmax(axis=1)
    bad = [i for i in range(len(names)) if not same[i] or (target is not None and diffs[i] > target)]
    rows = []
    for i in bad:
        top_two = np.sort(app[i])[-2:] if app.shape[1] > 1 else app[i]
        near_tie = not same[i] and top_two[-1] - top_two[0] < 2 * float(diffs[i])
        reason = why(i) if why else "float rounding in the runtime"
        if near_tie:
            reason += f"; the app's two best classes are only {top_two[-1] - top_two[0]:.2g} apart"
        if fmt.endswith("int8"):
            reason = "int8 weights (dynamic-range quantisation)" + ("; a near tie" if near_tie else "")
        rows.append({
            "image": names[i],
            "app": f"{classes[int(app[i].argmax())]} {float(app[i].max()):.4f}",
            "export": f"{classes[int(got[i].argmax())]} {float(got[i].max()):.4f}",
            "diff": float(diffs[i]),
            "why": reason,
        })  # fmt: skip
    return Check(
        format=fmt, input=given, images=len(names), top1_agreement=float(same.mean()) if len(names) else 1.0,
        max_abs_diff=float(diffs.max()) if len(diffs) else 0.0, target=target, disagreements=rows,
    )  # fmt: skip


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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tensorflow", "keras", "numpy", "pillow", "onnx", "onnxruntime", "tf2onnx", "ai-edge-litert"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


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

    An export replaces the run's earlier one, so only the run's owner or an admin may (core.access); the bundle
    records who made it.

    Raises:
        NotAllowed: ``user`` may not change the run.
        ExportError / UserError: an unknown format, a folder that cannot be written, a run that is not a run or
            whose model cannot be loaded.
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
                                      lambda i: _why_bytes(checked[i], size)))  # fmt: skip
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
    spec = images.preprocessing_spec(run.config.image_size, run.config.resize)
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
    model_card.write(run.path, work, parity=rows)
    _write_examples(run, work / "examples", formats, int8)
    files = {str(p.relative_to(work)): model_card.sha256(p) for p in sorted(work.rglob("*")) if p.is_file()}
    runs.write_json(work / BUNDLE_MARKER, {
        "format": "vgg16-classifier-export", "run": run.path.name, "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": _versions(), "sha256": files, "passed": report["passed"], "by": user,
    })  # fmt: skip


def _write_examples(run: Run, folder: Path, formats: Sequence[str], int8: bool) -> None:
    folder.mkdir()
    size = run.config.image_size
    step = {
        "crop": f"ImageOps.fit(im, ({size}, {size}), Image.Resampling.BILINEAR)",
        "pad": f"ImageOps.pad(im, ({size}, {size}), Image.Resampling.BILINEAR, color={images._PAD_COLOR})",
        "stretch": f"im.resize(({size}, {size}), Image.Resampling.BILINEAR)",
    }[run.config.resize]
    square = (
        "import numpy as np\nfrom PIL import Image, ImageOps\n\n"
        f"# The model's input: {size} x {size} uint8 RGB after the run's '{run.config.resize}' (preprocessing.json).\n"
        "# Pillow's antialiased bilinear comes within a level or two of the app's resize (tf.image.resize);\n"
        "# for the app's exact pixels, use the SavedModel's 'pixels' signature or core.geometry.square.\n"
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
