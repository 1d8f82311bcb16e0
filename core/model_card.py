"""A model card for stakeholders, made from a saved run: what the model is for, its data, settings and numbers.

    set_purpose(run_dir, "Sorts ants from bees in the garden survey.", user)   # the owner's own words
    purpose(run_dir)                                                           # "" until someone writes one
    facts(run_dir)                       # every number the card shows, as data (for tests and other code)
    markdown(run_dir)                    # the card as Markdown, referring to confusion_matrix.png
    html(run_dir)                        # one self-contained printable page (the matrix inline)
    confusion_png(run_dir)               # the confusion matrix drawn with Pillow, or None before an evaluation
    write(run_dir, "out/", parity=rows)  # MODEL_CARD.md, model_card.html, confusion_matrix.png

Everything comes from the run's own files (run.json, config.json, metrics.json, dataset.json, split.json,
evaluation.json, calibration.json, model.keras's checksum): the card never restates a number by hand, and it
says which known limits apply to this run. An export bundle passes its parity rows (``format``, ``images``,
``top1_agreement``, ``max_abs_diff``, ``passed``) to show how its files agree with the app's model.

The card is built in the web server on every look at the Runs page: this module reads json files and hashes one
file, and never imports TensorFlow or Keras (package versions come from ``importlib.metadata``).
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import importlib.metadata
import io
import json
import os
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from core import access, calibration, names, runs
from core.config import IMBALANCED, TrainConfig
from core.errors import UserError
from core.evaluate import load_evaluation
from core.images import preprocessing_spec

PURPOSE_FILE = "card.json"  # in the run's folder: {"purpose": "...", "by": "...", "at": "..."}
MAX_PURPOSE = 2000
PLACEHOLDER = (
    "Nobody has written yet what this model is for. Its owner can say so on the Runs page (Model card), "
    "before anyone relies on it."
)
MARKDOWN_FILE, HTML_FILE, IMAGE_FILE = "MODEL_CARD.md", "model_card.html", "confusion_matrix.png"
PACKAGES = ("tensorflow", "keras", "numpy", "pillow")
MIN_VAL_IMAGES = calibration.MIN_IMAGES  # below it there is no calibration, and the validation accuracy is rough
MAX_TABLE_CLASSES = 12  # the confusion matrix as a Markdown table up to this many classes; wider is unreadable
SPLIT_FOLDERS = {"train", "val", "valid", "validation", "test"}  # a "split" dataset's top folders (core.dataset)
NOT_RECORDED = "–"

HEADS = {
    "small-fc": "small-fc: Flatten, Dense 256, Dropout, Dense 256, Dropout, softmax",
    "gap": "gap: global average pooling, Dropout, softmax",
    "vgg-fc": "vgg-fc: VGG16's own fully connected layers, new last layer",
}
RESIZES = {
    "crop": "centre crop (the largest centred square)",
    "pad": "pad (the whole image, bordered to a square)",
    "stretch": "stretch (both sides scaled; the aspect ratio is not kept)",
}
OPTIMIZERS = {"sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta", "adam": "Adam",
              "adamw": "AdamW"}  # fmt: skip

# The confusion matrix image: cells shrink as classes grow, so 100 classes still fit a printed page's width.
CELL_MAX, CELL_MIN, GRID_TARGET = 56, 14, 900
LABEL_CHARS = 24  # longer class names are cut with "…" on the axes (the tables keep them whole)
PAD = 10
INK, GRID, DARK = (33, 37, 41), (206, 212, 218), (22, 72, 135)  # text, cell borders, a row share of 1


class CardError(UserError):
    """The run's files cannot make a card (missing or damaged); the message says which and what to do."""


# ---------------------------------------------------------------------------------------------- the owner's words


def purpose(run_dir: str | os.PathLike) -> str:
    """The owner's line about what the model is for, or ""."""
    try:
        data = runs.read_json(Path(run_dir) / PURPOSE_FILE)
    except (OSError, ValueError):
        return ""
    return str(data.get("purpose") or "") if isinstance(data, dict) else ""


def set_purpose(run_dir: str | os.PathLike, text: str, user: str = access.GUEST) -> None:
    """Save what the model is for (only the run's owner or an admin may, when sign-in is on)."""
    info = runs.read_run(run_dir)
    access.check(user, info.owner, f"describe the run {info.id}")
    names.check(text, "The description", lines=True)
    runs.write_json(
        Path(run_dir) / PURPOSE_FILE,
        {"purpose": text.strip()[:MAX_PURPOSE], "by": user, "at": time.strftime("%Y-%m-%dT%H:%M:%S")},
    )


# ---------------------------------------------------------------------------------------------- the facts


def percent(x: float | None) -> str:
    """How the card writes a share: '66.7%' ('–' when not recorded)."""
    return NOT_RECORDED if x is None else f"{x:.1%}"


def number(x: float | None, digits: int = 4) -> str:
    """How the card writes a loss or another plain number: '0.6931' ('–' when not recorded)."""
    return NOT_RECORDED if x is None else f"{x:.{digits}f}"


def facts(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Every fact the card shows, as plain data (json-serialisable).

    Keys: ``run``, ``title``, ``purpose``, ``dataset``, ``training`` (rows of setting/label/value/text),
    ``metrics``, ``evaluation`` (None before one), ``calibration`` (None for a run saved before it existed),
    ``limits`` (rows of key/text, only those that apply), ``preprocessing`` (``core.images.preprocessing_spec``),
    ``versions`` and ``model`` (file, bytes, sha256, the Keras version it was saved with).
    Raises ``CardError`` (a ``UserError``) for a folder that is no run or whose files are damaged.
    """
    path = runs.check_run(run_dir)  # UserError for a folder without the marker or without the model
    # read_run forgives unreadable files with defaults; a card must not present defaults as what the run did.
    config_data = _required(path, "config.json", dict)
    classes = _required(path, "classes.json", list)
    metrics = _required(path, "metrics.json", dict)
    try:
        info = runs.read_run(path)
        config = TrainConfig.from_dict(config_data)
    except (AttributeError, TypeError, ValueError):
        raise CardError(
            f"The run {path.name} is damaged: its run.json or config.json is not what a run saves."
        ) from None
    report = _optional(path / "dataset.json", dict)
    split = _optional(path / "split.json", dict)
    ev = load_evaluation(path)
    cal = calibration.load(path)

    dataset = _dataset(info.dataset, [str(c) for c in classes], report, split, metrics)
    evaluation = _evaluation(ev) if ev is not None else None
    trust = _calibration(cal, metrics)
    result = {
        "run": {
            "id": info.id,
            "dataset": info.dataset,
            "status": info.status,
            "started": info.started,
            "finished": info.finished,
            "owner": info.owner,
        },
        "title": info.dataset or info.id,
        "purpose": purpose(path),
        "dataset": dataset,
        "training": _settings(config, metrics, dataset),
        "metrics": _metrics(config, metrics),
        "evaluation": evaluation,
        "calibration": trust,
        "preprocessing": preprocessing_spec(config.image_size, config.resize),
        "versions": versions(),
        "model": _model_file(path / "model.keras"),
    }
    result["limits"] = _limits(info.status, config, result)
    return result


def _required(path: Path, name: str, kind: type) -> Any:
    try:
        data = runs.read_json(path / name)
    except FileNotFoundError:
        raise CardError(f"The run {path.name} has no {name}; it was not saved completely, so it has no card.") from None
    except (OSError, ValueError):
        raise CardError(f"The run {path.name} is damaged: its {name} cannot be read.") from None
    if not isinstance(data, kind):
        raise CardError(f"The run {path.name} is damaged: its {name} does not hold what a run saves there.")
    return data


def _optional(path: Path, kind: type) -> Any:
    try:
        data = runs.read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, kind) else None


def _class_of(file: str, classes: set[str], layout: str) -> str | None:
    """The class folder of a file in split.json (a path relative to the dataset's folder, maybe under a wrapper
    folder and, for a split dataset, under train/, val/ or test/)."""
    parts = PurePosixPath(file).parts[:-1]
    for i, part in enumerate(parts):
        if part in classes and (layout != "split" or (i > 0 and parts[i - 1].lower() in SPLIT_FOLDERS)):
            return part
    return None


def _dataset(name: str, classes: list[str], report: dict | None, split: dict | None, metrics: dict) -> dict:
    """Per class: its images in the dataset, and those the run trained, validated and could test on."""
    report = report or {}
    counts = report.get("counts") if isinstance(report.get("counts"), dict) else {}
    layout = str(report.get("layout") or "classes")
    # split.json says what the run really used (after dropped duplicates and excluded images): count from it when
    # every file's class can be read off its path, else fall back to the dataset's own train/val/test folders.
    used: dict[str, dict[str, int]] | None = None
    if split:
        used = {part: dict.fromkeys(classes, 0) for part in ("train", "val", "test")}
        known = set(classes)
        for part in used:
            for file in split.get(part) or []:
                cls = _class_of(str(file), known, layout)
                if cls is None:
                    used = None
                    break
                used[part][cls] += 1
            if used is None:
                break
    rows = []
    for cls in classes:
        own = counts.get(cls) if isinstance(counts.get(cls), dict) else {}
        row = {"class": cls, "images": sum(int(v) for v in own.values()) if own else None}
        for part in ("train", "val", "test"):
            row[part] = used[part][cls] if used is not None else (int(own[part]) if part in own else None)
        rows.append(row)
    total = report.get("total")
    if total is None and all(r["images"] is not None for r in rows):
        total = sum(r["images"] for r in rows)
    return {
        "name": name,
        "layout": layout,
        "classes": rows,
        "total": total,
        "train_images": metrics.get("train_images"),
        "val_images": metrics.get("val_images"),
        "test_images": sum(r["test"] or 0 for r in rows),
        "skipped": len(report.get("skipped") or []),
        "counted_from": "split.json" if used is not None else "dataset.json",
    }


def _settings(config: TrainConfig, metrics: dict, dataset: dict) -> list[dict[str, Any]]:
    """The TrainConfig in words: rows of {setting, label (the form's own), value (as saved), text}."""
    label = {f.name: f.metadata["label"] for f in TrainConfig.describe()}
    c = config
    if c.weights == "imagenet":
        weights = "ImageNet (pretrained VGG16)"
    elif c.weights == "none":
        weights = "random (not pretrained)"
    else:  # only the file's name: the server's folders are nobody's business
        weights = f"a VGG16 weights file ({Path(str(c.weights)).name})"
    optimizer = OPTIMIZERS.get(c.optimizer, c.optimizer)
    if c.applies("momentum"):
        optimizer += f", momentum {c.momentum:g}" + (", Nesterov" if c.nesterov else "")
    if c.applies("weight_decay"):
        optimizer += f", weight decay {c.weight_decay:g}"
    rate = f"{c.learning_rate:g}" + (f", decaying by {c.decay:g} per step" if c.decay else "")
    epochs = f"{c.epochs}"
    if c.two_phase:
        epochs += (
            f" with only the head training, then {c.fine_tune_epochs} more with the last {c.unfreeze} layers "
            f"unfrozen at the learning rate ÷ {c.fine_tune_lr_divisor:g}"
        )
    augmentation = [
        f.metadata["label"] + ("" if isinstance(getattr(c, f.name), bool) else f" {getattr(c, f.name):g}")
        for f in TrainConfig.describe("augmentation")
        if getattr(c, f.name)
    ]
    if c.class_weight == "balanced":
        given = metrics.get("class_weights") or {}
        weights_used = ", ".join(f"{k} {v:g}" for k, v in given.items() if isinstance(v, int | float))
        class_weight = "balanced: each class weighs as much as the others" + (
            f" ({weights_used})" if weights_used else ""
        )
    else:
        class_weight = "none: every image counts the same"
    has_val_folder = any(r["val"] for r in dataset["classes"]) and dataset["layout"] == "split"
    rows = [
        ("weights", c.weights, weights),
        ("head", c.head, HEADS.get(c.head, c.head)),
        ("image_size", c.image_size, f"{c.image_size} × {c.image_size}"),
        ("resize", c.resize, RESIZES.get(c.resize, c.resize)),
        ("unfreeze", c.unfreeze, f"{c.unfreeze} (every layer before them stays frozen)"),
        ("optimizer", c.optimizer, optimizer),
        ("learning_rate", c.learning_rate, rate),
        ("epochs", c.epochs, epochs),
        ("batch_size", c.batch_size, str(c.batch_size)),
        ("validation_split", c.validation_split,
         "the dataset's own validation folder" if has_val_folder else f"{c.validation_split:.0%} of each class"),
        ("augmentation", c.augmented, ", ".join(augmentation) if augmentation else "none"),
        ("class_weight", c.class_weight, class_weight),
        ("early_stopping", c.early_stopping,
         f"after {c.early_stopping} epochs without a better validation loss" if c.early_stopping else "off"),
        ("calibrate", c.calibrate, "yes" if c.calibrate else "no"),
        ("seed", c.seed, str(c.seed)),
    ]  # fmt: skip
    if c.exclude:
        rows.append(("exclude", len(c.exclude), f"{len(c.exclude)} images left out as suspected label errors"))
    return [{"setting": k, "label": label.get(k, "Augmentation"), "value": v, "text": t} for k, v, t in rows]


def _metrics(config: TrainConfig, metrics: dict) -> dict[str, Any]:
    keys = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "epochs_completed", "train_images",
            "val_images", "val_duplicates_dropped", "val_duplicates", "test_duplicates", "seconds")  # fmt: skip
    return {**{k: metrics.get(k) for k in keys}, "epochs_planned": config.total_epochs}


def _evaluation(ev) -> dict[str, Any]:
    return {
        "split": {"val": "validation", "test": "test"}.get(ev.split, ev.split or ev.source),
        "data": ev.data,
        "created": ev.created,
        "images": ev.images,
        "accuracy": ev.accuracy,
        "loss": ev.loss,
        # top-k says something only when k is below the number of classes (then every answer is in the top k)
        "top_k": ev.top_k if ev.top_k < len(ev.classes) else None,
        "top_k_accuracy": ev.top_k_accuracy if ev.top_k < len(ev.classes) else None,
        "classes": list(ev.classes),
        "confusion": ev.confusion,
        "per_class": [
            {k: row.get(k) for k in ("class", "precision", "recall", "f1", "support")} for row in ev.per_class
        ],
    }


def _calibration(report: calibration.Report | None, metrics: dict) -> dict[str, Any] | None:
    if report is None:
        old = metrics.get("calibration")  # metrics.json keeps the key numbers too
        if not isinstance(old, dict):
            return None
        report = calibration.Report(
            temperature=old.get("temperature") or 1.0,
            calibrated=(old.get("temperature") or 1.0) != 1.0,
            ece_before=old.get("ece_before"),
            ece_after=old.get("ece_after"),
            threshold=old.get("threshold"),
            coverage=old.get("coverage"),
        )
    return {
        "calibrated": report.calibrated,
        "reason": report.reason,
        "temperature": report.temperature,
        "images": report.images,
        "split": {"val": "validation"}.get(report.split, report.split),
        "ece_before": report.ece_before,
        "ece_after": report.ece_after,
        "threshold": report.threshold,
        "coverage": report.coverage,
        "accuracy": report.accepted_accuracy,
        "target": report.target,
        "threshold_source": report.threshold_source,
    }


def _limits(status: str, config: TrainConfig, f: dict[str, Any]) -> list[dict[str, str]]:
    """The known limits that apply to this run, each with a sentence a stakeholder understands."""
    found: dict[str, str] = {}
    m, data = f["metrics"], f["dataset"]
    if config.weights == "none":
        found["random_weights"] = (
            "The model started from random weights, not ImageNet: with a few hundred photos it learns far less "
            "than a pretrained one would."
        )
    sizes = {r["class"]: r["images"] if r["images"] is not None else r["train"] for r in data["classes"]}
    sizes = {k: v for k, v in sizes.items() if v}
    if len(sizes) >= 2:
        big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
        if sizes[big] >= IMBALANCED * sizes[small]:
            remedy = (
                "training weighed the classes to make up for it (class weights: balanced), yet"
                if config.class_weight == "balanced"
                else "training did not weigh the classes, so"
            )
            found["imbalance"] = (
                f"The classes are imbalanced: '{big}' has {sizes[big]} images, '{small}' only {sizes[small]} "
                f"({sizes[big] / sizes[small]:.1f}×); {remedy} the overall accuracy can look good while '{small}' "
                "is often missed: read its recall."
            )
    leaks = [(m.get("val_duplicates") or 0, "validation"), (m.get("test_duplicates") or 0, "test")]
    leaks = [(n, f"{n} {where} image{'s' if n != 1 else ''}") for n, where in leaks if n]
    if leaks:
        are = "is an exact or near copy" if sum(n for n, _ in leaks) == 1 else "are exact or near copies"
        found["leaks"] = (
            f"{' and '.join(words for _, words in leaks)} {are} of training images: the model has seen them, so "
            "the scores on them flatter it."
        )
    if m.get("val_images") is not None and m["val_images"] < MIN_VAL_IMAGES:
        found["small_validation"] = (
            f"Only {m['val_images']} validation images: the validation accuracy is rough, and the probabilities "
            f"could not be calibrated (that needs at least {MIN_VAL_IMAGES})."
        )
    if f["evaluation"] is None:
        found["not_evaluated"] = (
            "Not evaluated yet: the numbers are the validation scores from training; an evaluation (Evaluate page) "
            "adds the confusion matrix and each class's precision and recall."
        )
    if status == "stopped":
        found["stopped"] = (
            f"Training was stopped early: {m.get('epochs_completed') or 0} of {m['epochs_planned']} epochs completed."
        )
    return [{"key": k, "text": t} for k, t in found.items()]


def versions() -> dict[str, str | None]:
    """The installed versions of the packages the model depends on (None: not installed), without importing them."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


_SHA256: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> digest: a model is hashed once per process


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex), remembered while its size and modification time stay the same."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if len(_SHA256) > 256:
            _SHA256.clear()
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def _model_file(path: Path) -> dict[str, Any]:
    # A .keras file is a zip whose metadata.json names the Keras version that saved it: no Keras needed to read it.
    saved = {}
    try:
        with zipfile.ZipFile(path) as zf:
            saved = json.loads(zf.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
        "keras_version": saved.get("keras_version") if isinstance(saved, dict) else None,
        "saved": saved.get("date_saved") if isinstance(saved, dict) else None,
    }


# ---------------------------------------------------------------------------------------------- the confusion matrix


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):  # wide Unicode coverage
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font (needs FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def confusion_geometry(classes: list[str]) -> tuple[int, int, int]:
    """(left, top, cell): where the grid of ``confusion_png`` starts and each cell's side, in pixels."""
    cell = max(CELL_MIN, min(CELL_MAX, GRID_TARGET // max(len(classes), 1)))
    font = _font(_font_size(cell))
    label = max((int(font.getlength(_short(c))) for c in classes), default=0)
    title = _font_size(cell) + 2 * PAD  # the axis titles "True class" / "Predicted class"
    return title + label + PAD, title + label + PAD, cell


def _font_size(cell: int) -> int:
    return max(9, min(15, int(cell * 0.34)))


def draw_confusion(classes: list[str], confusion: list[list[int]]) -> bytes:
    """A PNG of the matrix: rows = true class, columns = predicted, counts in the cells, shaded by row share."""
    n = len(classes)
    left, top, cell = confusion_geometry(classes)
    size = _font_size(cell)
    font = _font(size)
    width, height = left + n * cell + PAD, top + n * cell + PAD
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for i, row in enumerate(confusion):
        total = sum(row)
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            fill = tuple(round(255 + (d - 255) * share) for d in DARK)
            x, y = left + j * cell, top + i * cell
            draw.rectangle((x, y, x + cell, y + cell), fill=fill, outline=GRID)
            if cell >= 2 * size:  # a count that cannot fit is left to the shade (and to the tables)
                ink = "white" if share > 0.5 else INK
                draw.text((x + cell / 2, y + cell / 2), str(count), fill=ink, font=font, anchor="mm")
        draw.text((left - PAD, top + i * cell + cell / 2), _short(classes[i]), fill=INK, font=font, anchor="rm")
    # Column names read upwards: drawn on a strip that is then turned a quarter to the left.
    strip = Image.new("RGB", (top - size - 2 * PAD, n * cell), "white")
    strip_draw = ImageDraw.Draw(strip)
    for j, name in enumerate(classes):
        strip_draw.text((PAD, j * cell + cell / 2), _short(name), fill=INK, font=font, anchor="lm")
    img.paste(strip.rotate(90, expand=True), (left, size + 2 * PAD))
    draw.text((left + n * cell / 2, PAD), "Predicted class", fill=INK, font=font, anchor="mt")
    axis = Image.new("RGB", (n * cell, size + 2 * PAD), "white")
    ImageDraw.Draw(axis).text((n * cell / 2, PAD), "True class", fill=INK, font=font, anchor="mt")
    img.paste(axis.rotate(90, expand=True), (0, top))
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


def confusion_png(run_dir: str | os.PathLike) -> bytes | None:
    """The run's confusion matrix as a PNG, or None when it has not been evaluated."""
    ev = load_evaluation(runs.check_run(run_dir))
    return draw_confusion(list(ev.classes), ev.confusion) if ev is not None and ev.confusion else None


# ---------------------------------------------------------------------------------------------- the card's blocks

# The card is one list of sections made of a few kinds of block; the Markdown and the HTML are two ways of writing
# the same list, so they cannot disagree.
Block = tuple  # ("p", text) | ("ul", [text]) | ("kv", [(label, text)]) | ("table", header, rows, numeric) | ("image",)


def _p(text: str) -> Block:
    return ("p", text)


def _table(header: list[str], rows: list[list[str]], numeric: set[int]) -> Block:
    """A table; ``numeric``: the indexes of the columns aligned right."""
    return ("table", header, rows, numeric)


def _sections(f: dict[str, Any], parity: list[dict] | None, image: bool) -> list[tuple[str, list[Block]]]:
    sections = [
        ("What it is for", [_p(f["purpose"] or PLACEHOLDER)]),
        ("Data", _data_blocks(f)),
        ("Training settings", [("kv", [(r["label"], r["text"]) for r in f["training"]])]),
        ("Results", _result_blocks(f)),
    ]
    if f["evaluation"]:
        sections.append(("Confusion matrix", _matrix_blocks(f["evaluation"], image)))
    if f["calibration"]:
        sections.append(("Trust in the probabilities", _trust_blocks(f["calibration"])))
    limits = [x["text"] for x in f["limits"]] or ["None of the known limits applies to this run."]
    sections.append(("Known limits", [("ul", limits)]))
    # The steps are core.images' own description, only laid out here: the card never restates them.
    steps = [
        key.replace("_", " ").capitalize() + ": " + ("; ".join(map(str, v)) if isinstance(v, list) else str(v))
        for key, v in f["preprocessing"].items()
    ]
    sections.append(("Preprocessing", [_p("From an image file to the model's answer, step by step:"), ("ul", steps)]))
    if parity:
        sections.append(("Exports checked against the app", _parity_blocks(parity)))
    sections.append(("Reproducibility", [("kv", _about(f))]))
    return sections


def _data_blocks(f: dict[str, Any]) -> list[Block]:
    d, m = f["dataset"], f["metrics"]
    parts = [("images", "In the dataset"), ("train", "Training"), ("val", "Validation"), ("test", "Test")]
    parts = [(k, name) for k, name in parts if any(r[k] for r in d["classes"])]
    rows = [[r["class"], *(_count(r[k]) for k, _ in parts)] for r in d["classes"]]
    used = f"The model trained on {_count(d['train_images'])} images and was validated on {_count(d['val_images'])}"
    used += f"; {_count(d['test_images'])} more are set aside for testing." if d["test_images"] else "."
    blocks = [
        _p(f"{d['name'] or 'The dataset'}: {len(d['classes'])} classes, {_count(d['total'])} images. {used}"),
        _table(["Class", *(name for _, name in parts)], rows, set(range(1, len(parts) + 1))),
    ]
    if dropped := m.get("val_duplicates_dropped"):
        blocks.append(_p(f"{dropped} validation images that duplicated training images were left out of validation."))
    if d["skipped"]:
        blocks.append(_p(f"{d['skipped']} files of the upload were skipped (not images, or unreadable)."))
    return blocks


def _result_blocks(f: dict[str, Any]) -> list[Block]:
    m, ev = f["metrics"], f["evaluation"]
    training = [
        ("Validation accuracy", percent(m["val_accuracy"])),
        ("Validation loss", number(m["val_loss"])),
        ("Training accuracy", percent(m["train_accuracy"])),
        ("Epochs completed", f"{_count(m['epochs_completed'])} of {m['epochs_planned']}"),
    ]
    blocks: list[Block] = [("kv", training)]
    if not ev:
        return blocks
    where = f"{_count(ev['images'])} {ev['split']} images" + (f" of {ev['data']}" if ev["data"] else "")
    scores = [("Evaluated on", where), ("Accuracy", percent(ev["accuracy"])), ("Loss", number(ev["loss"]))]
    if ev["top_k"]:
        scores.append((f"Top-{ev['top_k']} accuracy", percent(ev["top_k_accuracy"])))
    per_class = [
        [r["class"], percent(r["precision"]), percent(r["recall"]), percent(r["f1"]), _count(r["support"])]
        for r in ev["per_class"]
    ]
    return [
        *blocks,
        _p("Evaluation on images the model never trained on:"),
        ("kv", scores),
        _table(["Class", "Precision", "Recall", "F1", "Images"], per_class, {1, 2, 3, 4}),
        _p(
            "Precision: of the images the model gave this class, the share that are of it. Recall: of the images "
            "of this class, the share the model found."
        ),
    ]


def _matrix_blocks(ev: dict[str, Any], image: bool) -> list[Block]:
    blocks = [
        _p(
            "Rows: the true class; columns: the class the model said. Each cell counts images; the darker, the "
            "larger its share of the row."
        )
    ]
    if image:
        blocks.append(("image",))
    elif len(ev["classes"]) <= MAX_TABLE_CLASSES:
        rows = [[c, *map(str, row)] for c, row in zip(ev["classes"], ev["confusion"], strict=True)]
        blocks.append(_table(["True ↓ predicted →", *ev["classes"]], rows, set(range(1, len(ev["classes"]) + 1))))
    else:
        blocks.append(_p(f"With {len(ev['classes'])} classes the matrix is an image: see {IMAGE_FILE}."))
    return blocks


def _trust_blocks(c: dict[str, Any]) -> list[Block]:
    if c["calibrated"]:
        fitted = (
            f"Calibrated on {_count(c['images'])} {c['split']} images: expected calibration error "
            f"{percent(c['ece_before'])} → {percent(c['ece_after'])}, temperature {c['temperature']:.2f}. "
            "A calibrated model's 80% is right about 8 times in 10."
        )
    else:
        fitted = f"Not calibrated: {c['reason'] or 'the run was not calibrated.'}"
    if c["coverage"] is None:
        threshold = "No “not sure” threshold: every answer is given."
    elif c["threshold"] is None:
        threshold = f"No “not sure” threshold: every answer is given ({percent(c['accuracy'])} right)."
    else:
        who = (
            "set by hand on the Evaluate page"
            if c["threshold_source"] == "user"
            else f"chosen so that {percent(c['target'])} of the answers are right"
        )
        threshold = (
            f"“Not sure” below {percent(c['threshold'])} confidence ({who}): the model answers "
            f"{percent(c['coverage'])} of the {c['split']} images, and {percent(c['accuracy'])} of those answers "
            "are right."
        )
    return [_p(fitted), _p(threshold)]


def _parity_blocks(parity: list[dict]) -> list[Block]:
    # An export checked on decoded pixels and on encoded bytes has two rows: "input" then tells them apart.
    inputs = any("input" in r for r in parity)
    rows = [
        [
            str(r.get("format", NOT_RECORDED)),
            *([str(r.get("input", NOT_RECORDED))] if inputs else []),
            _count(r.get("images")),
            _share(r.get("top1_agreement")),
            _small(r.get("max_abs_diff")),
            {True: "yes", False: "no"}.get(r.get("passed"), NOT_RECORDED),
        ]
        for r in parity
    ]
    header = ["Format", *(["Input"] if inputs else []), "Images", "Top-1 agreement",
              "Largest probability difference", "Passed"]  # fmt: skip
    first = 2 if inputs else 1
    return [
        _p(
            "Each exported model classified the same images as the app's model: how often their top class agrees, "
            "and the largest difference in any probability."
        ),
        _table(header, rows, {first, first + 1, first + 2}),
    ]


def _about(f: dict[str, Any]) -> list[tuple[str, str]]:
    model, run = f["model"], f["run"]
    names = {"tensorflow": "TensorFlow", "keras": "Keras", "numpy": "NumPy", "pillow": "Pillow"}
    about = [("Model file", f"{model['file']} ({model['bytes'] / 1e6:.1f} MB)"), ("SHA-256", model["sha256"])]
    if model["keras_version"]:
        about.append(("Saved with Keras", model["keras_version"]))
    # What is installed now, not necessarily what trained the model: the run's files do not record that.
    about += [(f"{names.get(k, k)} on this server", v or "not installed") for k, v in f["versions"].items()]
    trained = f"{run['started'] or NOT_RECORDED} to {run['finished'] or NOT_RECORDED}"
    return [*about, ("Run", run["id"]), ("Trained", trained)]


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else NOT_RECORDED if n is None else str(n)


def _share(x: Any) -> str:
    return percent(x) if isinstance(x, int | float) and not isinstance(x, bool) else _count(x)


def _small(x: Any) -> str:
    return f"{x:.2g}" if isinstance(x, float) else _count(x)


def _subtitle(f: dict[str, Any]) -> str:
    run = f["run"]
    by = f" by {run['owner']}" if run["owner"] else ""
    when = f" on {run['finished'][:10]}" if run["finished"] else ""
    status = " (stopped early)" if run["status"] == "stopped" else ""
    return f"Run {run['id']}: a VGG16 image classifier trained{by}{when}{status}."


# ---------------------------------------------------------------------------------------------- Markdown


def image_markdown(image_name: str) -> str:
    """The line of the card that shows the confusion matrix image (a page can split the card there)."""
    return f"![Confusion matrix]({image_name})"


def _md(text: str) -> str:
    # '<' starts raw HTML in Markdown: written as an entity, nothing a user typed becomes a tag anywhere it renders.
    return str(text).replace("<", "&lt;")


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def markdown(run_dir: str | os.PathLike, parity: list[dict] | None = None, image_name: str | None = IMAGE_FILE) -> str:
    """The card as Markdown. With ``image_name`` it shows the confusion matrix as that image file (``write`` puts it
    beside the card); with None, as a table of counts, so the text stands alone."""
    f = facts(run_dir)
    out = [f"# Model card: {_md(f['title'])}", "", _md(_subtitle(f)), ""]
    for title, blocks in _sections(f, parity, image=image_name is not None):
        out += [f"## {title}", ""]
        for block in blocks:
            kind = block[0]
            if kind == "p":
                out += [_md(block[1]), ""]
            elif kind == "ul":
                out += [f"- {_md_cell(item)}" for item in block[1]] + [""]
            elif kind == "kv":  # a list reads better than a table without a header row
                out += [f"- **{_md_cell(label)}:** {_md_cell(value)}" for label, value in block[1]] + [""]
            elif kind == "table":
                _, header, rows, numeric = block
                out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                out.append("|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows] + [""]
            elif kind == "image":
                out += [image_markdown(image_name), ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- HTML

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; margin: 0; }
main { max-width: 820px; margin: 2rem auto; padding: 0 1.25rem; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; padding-bottom: .2rem; border-bottom: 1px solid #dee2e6; }
.subtitle { color: #495057; margin-top: 0; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #dee2e6; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f1f3f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 14rem; font-weight: 600; }
td { overflow-wrap: anywhere; }
.purpose { white-space: pre-wrap; }
img { max-width: 100%; height: auto; }
@page { size: A4; margin: 16mm; }
@media print {
  body { font-size: 10pt; }
  main { max-width: none; margin: 0; padding: 0; }
  h2 { break-after: avoid; }
  table, img, li { break-inside: avoid; }
  th { background: #f1f3f5 !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _e(text: Any) -> str:
    return html_lib.escape(str(text), quote=True)


def html(run_dir: str | os.PathLike, parity: list[dict] | None = None) -> str:
    """The card as one self-contained, printable HTML page: inline CSS, the confusion matrix as a data: URI,
    every text escaped (the purpose is what a user typed)."""
    f = facts(run_dir)
    png = confusion_png(run_dir)
    body = [f"<header><h1>Model card: {_e(f['title'])}</h1>", f'<p class="subtitle">{_e(_subtitle(f))}</p></header>']
    for number_, (title, blocks) in enumerate(_sections(f, parity, image=png is not None)):
        body.append(f"<section><h2>{_e(title)}</h2>")
        for block in blocks:
            kind = block[0]
            if kind == "p":
                css = ' class="purpose"' if number_ == 0 else ""
                body.append(f"<p{css}>{_e(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_e(item)}</li>" for item in block[1]) + "</ul>")
            elif kind == "kv":
                rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in block[1])
                body.append(f'<table class="kv">{rows}</table>')
            elif kind == "table":
                _, header, rows, numeric = block
                align = [' class="num"' if i in numeric else "" for i in range(len(header))]
                head = "".join(f"<th{a}>{_e(h)}</th>" for a, h in zip(align, header, strict=True))
                cells = "".join(
                    "<tr>" + "".join(f"<td{a}>{_e(c)}</td>" for a, c in zip(align, row, strict=True)) + "</tr>"
                    for row in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            elif kind == "image" and png:
                data = base64.b64encode(png).decode("ascii")
                body.append(f'<img src="data:image/png;base64,{data}" alt="Confusion matrix">')
        body.append("</section>")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Model card: {_e(f['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------- files


def write(run_dir: str | os.PathLike, out_dir: str | os.PathLike, parity: list[dict] | None = None) -> list[Path]:
    """Write MODEL_CARD.md, model_card.html and (after an evaluation) confusion_matrix.png into ``out_dir``;
    return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = confusion_png(run_dir)
    written = [out / MARKDOWN_FILE, out / HTML_FILE]
    written[0].write_text(markdown(run_dir, parity, IMAGE_FILE), encoding="utf-8")
    written[1].write_text(html(run_dir, parity), encoding="utf-8")
    if png:
        (out / IMAGE_FILE).write_bytes(png)
        written.append(out / IMAGE_FILE)
    return written
