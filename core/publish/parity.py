"""The parity check: the app's probabilities against an export's, on the run's validation images and a few made
images of odd shapes, from decoded pixels and from encoded bytes.

    files, where = parity_files(run)        # (name, bytes) of the images to check, and where they came from
    labels, part = held_out_labels(run)     # {name: class index} of the run's own images; "validation"
    check = compare("onnx", "square uint8", names, app, got, run.classes, PIXELS_TARGET)
    check = scores(check, names, app_scores, got_scores, run.ood.threshold, SCORE_PIXELS_TARGET)  # "none of these"
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import numpy as np
import tensorflow as tf
from PIL import Image

from core.evaluate.evaluation import saved_images_root
from core.imaging import pillow as images
from core.model import geometry
from core.model.predict import Run
from core.workspace import runs

MAX_IMAGES = 200  # validation images checked per export: enough to find a systematic difference, quick on a CPU


@dataclass
class Check:
    """One row of the parity report: an export in its runtime against the app, on the same images."""

    format: str  # saved_model, litert, litert-fp16, litert-int8, onnx (core.publish.bundles.FORMATS)
    input: str  # what the export was given: "encoded bytes", "decoded pixels" or "square uint8"
    images: int
    top1_agreement: float
    max_abs_diff: float
    target: float | None  # the largest probability difference allowed; None: reported only (int8)
    disagreements: list[dict] = field(default_factory=list)  # {"image", "app", "export", "diff", "why"}
    # "None of these" (a run that can say it; None otherwise): the share of images whose flag (score above the
    # run's threshold) agrees with the app's, the largest relative score difference and its target (``scores``)
    none_of_these_agreement: float | None = None
    max_score_diff: float | None = None
    score_target: float | None = None
    score_disagreements: list[dict] = field(default_factory=list)  # the same keys as ``disagreements``

    @property
    def passed(self) -> bool:
        if self.target is None:
            return True
        scored = self.score_target is None or (
            self.none_of_these_agreement == 1.0 and self.max_score_diff is not None
            and self.max_score_diff <= self.score_target
        )  # fmt: skip
        return scored and self.top1_agreement == 1.0 and self.max_abs_diff <= self.target

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


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


def held_out_labels(run: Run) -> tuple[dict[str, int], str]:
    """The true class (an index into the run's classes) of each held-out image ``parity_files`` may take, by name
    (as split.json records it or, a run from before it did, the class folder the file lies in), and which images
    they are: "test" or "validation"."""
    try:
        saved = runs.read_json(run.path / "split.json")
    except (OSError, ValueError):
        return {}, "validation"
    part = "test" if saved.get("test") else "val"
    listed = saved.get(part) or []
    recorded = (saved.get("labels") or {}).get(part) or []
    words = "test" if part == "test" else "validation"
    if len(recorded) == len(listed):
        return {name: int(k) for name, k in zip(listed, recorded, strict=True)}, words
    index = {c: k for k, c in enumerate(run.classes)}
    folders = {name: next((index[p] for p in reversed(name.split("/")[:-1]) if p in index), None) for name in listed}
    return {name: k for name, k in folders.items() if k is not None}, words


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


def why_bytes(sample: Sample, size: int) -> str:
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
        if fmt.endswith(("int8", "fp16")):
            reason = ("full-integer int8 quantisation" if fmt.endswith("int8") else "float16 weights") + (
                "; a near tie" if near_tie else ""
            )
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


def _score_why(fmt: str, near: bool, why: str) -> str:
    if fmt.endswith(("int8", "fp16")):
        return "full-integer int8 quantisation" if fmt.endswith("int8") else "float16 weights"
    return why + ("; the app's score is nearer the threshold than the difference" if near else "")


def scores(check: Check, names: list[str], app: np.ndarray | None, got: np.ndarray | None, threshold: float,
           target: float | None, why: Callable[[int], str] | None = None) -> Check:  # fmt: skip
    """``check`` with "none of these" compared: the share of images whose flag (score > ``threshold``) agrees with
    the app's, the largest score difference relative to max(1, threshold, the app's score), and every image whose
    flag differs or whose score misses ``target`` (None: reported only). ``app`` None: the run cannot say, and the
    check is returned as it is; ``got`` None: the export gives no score where it should (every flag disagrees)."""
    if app is None:
        return check
    a = np.asarray(app, np.float64)
    if got is None:
        rows = [{"image": "every image", "app": "a score", "export": "no score", "diff": None,
                 "why": "the export has no “none of these” output"}]  # fmt: skip
        return replace(check, none_of_these_agreement=0.0, score_target=target, score_disagreements=rows)
    g = np.asarray(got, np.float64).reshape(len(a))
    diffs = np.abs(g - a) / np.maximum(np.maximum(1.0, abs(threshold)), np.abs(a))
    same = (a > threshold) == (g > threshold)
    rows = []
    for i in range(len(a)):
        if same[i] and (target is None or diffs[i] <= target):
            continue
        near = abs(a[i] - threshold) <= abs(g[i] - a[i])
        rows.append({
            "image": names[i],
            "app": f"{'none of these' if a[i] > threshold else 'a class'} (score {a[i]:.6g})",
            "export": f"{'none of these' if g[i] > threshold else 'a class'} (score {g[i]:.6g})",
            "diff": float(diffs[i]),
            "why": _score_why(check.format, near, why(i) if why else "float rounding in the runtime"),
        })  # fmt: skip
    return replace(
        check, none_of_these_agreement=float(same.mean()) if len(a) else 1.0,
        max_score_diff=float(diffs.max()) if len(diffs) else 0.0, score_target=target, score_disagreements=rows,
    )  # fmt: skip
