"""Evaluation of a saved run on held-out images: accuracy, loss, confusion matrix, per-class scores, worst mistakes.

    ev = evaluate_run("runs/ants", "photos.zip", top_k=3)   # or a folder, a loaded Dataset, or None
    ev.accuracy, ev.per_class, ev.most_confused[:10], ev.misclassified[:10]
    load_evaluation("runs/ants")                               # the saved result, or None: pages read this

Which images: with ``data``, its own ``test/`` split when it has one, else its validation images (its ``val/``
folder, or the split training would make with the run's seed and fraction); those never trained the model when
``data`` is the training dataset. Without ``data``, the run's ``split.json`` lists (the test list when non-empty,
else the validation list); they are paths relative to the dataset folder used for training, so they can only be
found while split.json records that folder (``"root"``) and it still exists — extracted zips are temporary, so
otherwise the dataset must be given again. Images of classes the run does not know are skipped with a warning.

Images are classified by ``core.model.predict`` (the training preprocessing, in batches); the metrics come from the pure
``compute_metrics``; how well the run answers "none of these" comes from ``core.evaluate.none_of_these``. The
result is written once to ``<run>/evaluation.json``. Importing this module does not load TensorFlow
(``evaluate_run`` does), so a page can call ``load_evaluation`` without it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from core.data.dataset import Dataset, load_dataset, split_dataset
from core.model import calibration
from core.util.errors import UserError
from core.workspace import access, datasets, records, runs
from core.workspace.folders import work_root

FILE = "evaluation.json"
FORMAT = 1
CHUNK = 256  # images decoded at once: bounds memory on a large test set and paces the progress reports
EPS = 1e-7  # Keras' clip for the cross-entropy: a confidently wrong image costs -log(1e-7), not infinity

Progress = Callable[[int, int], None]


@dataclass
class Evaluation:
    """Everything an evaluation found; ``to_dict``/``from_dict`` are the evaluation.json format."""

    classes: list[str]  # the run's classes, in the order of the matrix rows and columns
    images: int
    accuracy: float
    loss: float  # mean categorical cross-entropy
    top_k: int  # k actually used: at most the number of classes
    top_k_accuracy: float
    confusion: list[list[int]]  # rows = true class, columns = predicted class
    confusion_normalized: list[list[float]]  # each row divided by its sum; a class with no images is all 0
    per_class: list[dict[str, Any]]  # {"class", "precision", "recall", "f1", "support"}
    most_confused: list[dict[str, Any]]  # {"true", "predicted", "count"}, off-diagonal, most first
    misclassified: list[dict[str, Any]]  # {"file", "true", "predicted", "probability", "true_probability"}
    source: str = ""  # "val" or "test" (the run's saved split) or "given data"
    split: str = ""  # "val" or "test": which part of the source
    data: str = ""  # the dataset's name
    files: list[str] = field(default_factory=list)  # every image used, relative to the dataset folder
    warnings: list[str] = field(default_factory=list)
    created: str = ""
    root: str = ""  # the dataset folder ``files`` are relative to; a temporary one may be gone by now
    calibration: dict[str, Any] = field(default_factory=dict)  # core.model.calibration.on_images on these images
    by: str = ""  # who asked for it (core.workspace.access: a user's key, '' for a guest)
    none_of_these: dict[str, Any] = field(default_factory=dict)  # core.evaluate.none_of_these.assess; {}: older

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def compute_metrics(
    y_true, probabilities, classes: list[str], files: list[str] | None = None, top_k: int = 3
) -> Evaluation:
    """Score predictions: ``y_true`` (n,) class indices, ``probabilities`` (n, classes), one row per image.

    Precision, recall and F1 of a class that was never predicted, or has no images, are 0 rather than 0/0.
    Misclassified images come worst first: the highest probability given to the wrong class.

    Long: every metric of the report from one confusion matrix and one pass over the probabilities; split, the
    same arrays would be passed around five times.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    n, c = len(y), len(classes)
    if p.shape != (n, c):
        raise ValueError(f"probabilities must have shape ({n}, {c}). Received: shape={p.shape}")
    if n == 0:
        raise ValueError("there must be at least one image. Received: y_true=[]")
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"y_true must hold class indices 0-{c - 1}. Received: values {y.min()}-{y.max()}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1. Received: top_k={top_k}")
    files = list(files) if files is not None else [f"image {i + 1}" for i in range(n)]
    if len(files) != n:
        raise ValueError(f"files must name each of the {n} images. Received: {len(files)} names")

    pred = p.argmax(axis=1)
    k = min(top_k, c)
    true_p = p[np.arange(n), y]
    # the true class is in the top k when fewer than k classes score strictly higher (ties count for it)
    in_top_k = (p > true_p[:, None]).sum(axis=1) < k
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    support, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    precision, recall = _ratio(hits, predicted), _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)

    off = [(confusion[t, q], t, q) for t in range(c) for q in range(c) if t != q and confusion[t, q]]
    wrong = np.flatnonzero(pred != y)
    # worst first; ties keep file order so the list is the same on every run
    wrong = sorted(wrong, key=lambda i: (-p[i, pred[i]], i))
    return Evaluation(
        classes=list(classes),
        images=n,
        accuracy=float(np.mean(pred == y)),
        loss=float(np.mean(-np.log(np.clip(true_p, EPS, 1.0)))),
        top_k=k,
        top_k_accuracy=float(np.mean(in_top_k)),
        confusion=confusion.tolist(),
        confusion_normalized=_ratio(confusion, support[:, None].repeat(c, axis=1)).tolist(),
        per_class=[
            {
                "class": classes[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(c)
        ],
        most_confused=[
            {"true": classes[t], "predicted": classes[q], "count": int(count)}
            for count, t, q in sorted(off, key=lambda o: (-o[0], o[1], o[2]))
        ],
        misclassified=[
            {
                "file": files[i],
                "true": classes[y[i]],
                "predicted": classes[pred[i]],
                "probability": float(p[i, pred[i]]),
                "true_probability": float(true_p[i]),
            }
            for i in wrong
        ],
        files=files,
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, with 0/0 (and x/0) defined as 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---------------------------------------------------------------------------------------------- a saved run


def evaluate_run(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | Dataset | None = None,
    top_k: int = 3,
    progress: Progress | None = None,
    user: str = access.GUEST,
) -> Evaluation:
    """Classify the held-out images (see the module docstring for which), score them, save evaluation.json.

    ``data`` is a zip, a folder or an already loaded ``Dataset``; a zip is extracted into a temporary folder
    that is removed afterwards. ``progress(done, total)`` is called while images are classified.

    It replaces the run's evaluation (which its model card, demo and exports show), so only the run's owner or an
    admin may (core.workspace.access); the evaluation records who made it.

    Raises:
        NotAllowed: ``user`` may not change the run.
        UserError: not a run, bad ``top_k``, unusable data, the saved split's images are gone, or no evaluation
            image belongs to a class the run knows.
    """
    if top_k < 1:
        raise UserError(f"Top-k must be at least 1 (got {top_k}).")
    info = runs.read_run(run_dir)
    access.check(user, info.owner, f"evaluate the run {info.id}")
    from core.model.predict import load_run  # TensorFlow loads here, after the cheap checks

    run = load_run(run_dir)
    if data is None or isinstance(data, Dataset):
        return _evaluate(run, data, top_k, progress, user)
    work = work_root()
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evaluate-", dir=work) as tmp:
        return _evaluate(run, load_dataset(data, tmp), top_k, progress, user)


def _evaluate(run, ds: Dataset | None, top_k: int, progress: Progress | None, user: str = "") -> Evaluation:
    if ds is None:
        ds, picked, split = _saved_split(run)
        source, name = split, run.info.get("dataset") or ds.report.source  # not the dataset folder's own name
    else:
        picked, split = _held_out(ds, run.config, _trained_files(run, ds))
        source, name = "given data", ds.report.source
    index = {cls: i for i, cls in enumerate(run.classes)}
    unknown = [it for it in picked if ds.classes[it.label] not in index]
    known = [it for it in picked if ds.classes[it.label] in index]
    warnings = []
    if unknown:
        names = sorted({ds.classes[it.label] for it in unknown})
        warnings.append(
            f"{_count(len(unknown), 'image')} of {_count(len(names), 'class', 'classes')} the model was not trained "
            f"on ({', '.join(names)}) {'was' if len(unknown) == 1 else 'were'} skipped."
        )
    if not known:
        raise UserError(
            f"None of the {len(picked)} {split} images of {name} is of a class the model knows "
            f"({', '.join(run.classes)})."
        )

    files, y_true, probs, scores, unreadable = [], [], [], [], []
    for start in range(0, len(known), CHUNK):
        chunk = known[start : start + CHUNK]
        results = _predict_all(run, [str(ds.root / it.path) for it in chunk])
        for it, (row, error, score) in zip(chunk, results, strict=True):
            if error:
                unreadable.append(f"{it.path}: {error}")
            else:
                files.append(it.path)
                y_true.append(index[ds.classes[it.label]])
                probs.append(row)
                scores.append(score)
        if progress:
            progress(min(start + CHUNK, len(known)), len(known))
    if unreadable:
        warnings.append(f"{_count(len(unreadable), 'image')} could not be read and skipped ({unreadable[0]}).")
    if not files:
        raise UserError(f"None of the {split} images of {name} could be read.")

    ev = compute_metrics(y_true, np.stack(probs), run.classes, files, top_k)
    ev.source, ev.split, ev.data = source, split, name
    ev.warnings = warnings
    ev.root = str(ds.root.resolve())
    saved = calibration.load(run.path)
    ev.calibration = calibration.on_images(
        np.stack(probs), y_true, saved.temperature if saved else 1.0, saved.threshold if saved else None
    )
    from core.evaluate import none_of_these  # TensorFlow is loaded already: the run answered above

    ev.none_of_these = none_of_these.assess(run, scores, ds)
    ev.warnings += ev.none_of_these.get("warnings", [])
    ev.created = time.strftime("%Y-%m-%dT%H:%M:%S")
    ev.by = user
    runs.write_json(run.path / FILE, ev.to_dict())
    return ev


def _predict_all(run, paths: list[str]) -> list[tuple[np.ndarray | None, str | None, float | None]]:
    """Every class's probability per image, why it could not be read, and its "none of these" score (None: the run
    cannot say), through ``core.model.predict`` so the preprocessing is training's."""
    from core.model.predict import predict

    order = {name: i for i, name in enumerate(run.classes)}
    out = []
    for p in predict(run, paths, top_k=len(run.classes), exact=True):
        if not p.ok:
            out.append((None, p.error, None))
            continue
        row = np.zeros(len(run.classes), dtype=np.float64)
        for name, prob in p.top:
            row[order[name]] = prob
        out.append((row, None, p.score))
    return out


def _held_out(ds: Dataset, config, trained: set[str] | None = None) -> tuple[list, str]:
    """The given dataset's test split, else the validation images training would hold out with this config (less
    ``trained``, the files the run is known to have trained on)."""
    test = [it for it in ds.items if it.split == "test"]
    if test:
        return test, "test"
    _, val_idx = split_dataset(ds, config)
    return [ds.items[i] for i in val_idx if ds.items[i].path not in (trained or ())], "val"


def _saved_split(run) -> tuple[Dataset, list, str]:
    """The run's own test (or validation) images, found again in the dataset folder training used."""
    again = f"pass the dataset again: python -m core evaluate {run.path} DATA"
    try:
        saved = runs.read_json(run.path / "split.json")
    except (OSError, ValueError):
        raise UserError(f"The run {run.path.name} has no readable split.json; {again}.") from None
    split = "test" if saved.get("test") else "val"
    wanted = saved.get(split) or []
    root = saved.get("root")
    if not wanted:
        raise UserError(f"The run {run.path.name} saved no validation images; {again}.")
    if not root or not all((Path(root) / p).is_file() for p in wanted):
        raise UserError(
            f"The {'test' if split == 'test' else 'validation'} images saved with {run.path.name} are no longer "
            f"on disk (datasets are extracted to temporary folders); {again}."
        )
    # A saved dataset's version gives each file its class exactly as training did (relabelled and added images
    # included); a folder without versions is scanned again.
    ds = _trained_version(run) or load_dataset(root)
    by_path = {it.path: it for it in ds.items}
    missing = [p for p in wanted if p not in by_path]
    if missing:
        raise UserError(f"{missing[0]} is no longer a usable image of the training dataset; {again}.")
    return ds, [by_path[p] for p in wanted], split


def _trained_version(run) -> Dataset | None:
    """The saved dataset's version the run trained on, while it exists (None: a zip path, or deleted)."""
    dataset_id = str(run.info.get("dataset_id") or "")
    if not records.exists(dataset_id):
        return None
    try:  # a run from before versions trained on the dataset as saved: version 1
        return datasets.open_dataset(dataset_id, touch=False, version=run.config.dataset_version or 1)
    except UserError:
        return None


def _trained_files(run, ds: Dataset) -> set[str]:
    """The files the run trained on, when ``ds`` is the saved dataset it trained on: never scored as held out (a
    run from before dataset versions split it by its seed, not by content hash)."""
    if not ds.id or run.info.get("dataset_id") != ds.id:
        return set()
    try:
        return set(runs.read_json(Path(run.path) / "split.json").get("train") or [])
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def saved_images_root(run_dir: str | os.PathLike) -> Path | None:
    """The dataset folder of the run's saved split while every image ``evaluate_run(run_dir)`` needs is there.

    None when the run has no readable split.json, it does not record the folder, or an image is gone: then
    ``evaluate_run`` needs the dataset again. Cheap: checks files, reads no image, loads no TensorFlow.
    """
    try:
        saved = runs.read_json(Path(run_dir) / "split.json")
        wanted = saved.get("test") or saved.get("val") or []
        root = Path(saved["root"]) if saved.get("root") else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if root is None or not wanted or not all((root / p).is_file() for p in wanted):
        return None
    return root


def images_root(ev: Evaluation, run_dir: str | os.PathLike) -> Path | None:
    """Where the evaluated images are now: the folder ``ev.files`` are relative to, or None when it is gone."""
    root = Path(ev.root) if ev.root else None
    if root is None and ev.source in ("val", "test"):  # evaluated from the saved split before roots were recorded
        root = saved_images_root(run_dir)
    return root if root is not None and root.is_dir() else None


def class_errors(ev: Evaluation) -> list[int]:
    """Per class (in ``ev.classes`` order): its images predicted as another class plus other images predicted as it."""
    m = np.asarray(ev.confusion, dtype=np.int64)
    off = m - np.diag(np.diag(m))
    return (off.sum(axis=1) + off.sum(axis=0)).tolist()


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def load_evaluation(run_dir: str | os.PathLike) -> Evaluation | None:
    """The run's saved evaluation, or None when it has none (or one in an older format): evaluate it then."""
    path = runs.check_run(run_dir) / FILE
    try:
        data = runs.read_json(path)
        if data.get("format") != FORMAT:
            return None
        return Evaluation.from_dict(data)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
