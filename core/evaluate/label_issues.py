"""Suspected label errors: images whose given class the run's own features argue against, found by cleanlab.

    found = find_label_issues("runs/ants", folds=5, progress=report)   # writes <run>/label_issues.json
    load_label_issues("runs/ants")            # the saved result, or None: pages read this

How suspects are found (see also the README's Evaluate section):

* Images: the run's training and validation images (its ``split.json``), with their classes as the dataset gives
  them. Test images are left alone: they score the model, they do not train it.
* Features: the output of the run's frozen prefix (the layers its config keeps frozen: they never saw the labels,
  so a wrong label cannot have been memorised into them), through the same feature cache as training
  (``core.train.features``), so a run trained on cached features costs nothing to compute them again. A spatial output
  (or a Flatten of one) is averaged over its positions into one value per channel. A run that froze nothing falls
  back to its deepest pooling layer; the result says that those features were fine-tuned on the very labels under
  suspicion, so a wrong label may look right.
* Out-of-fold probabilities: k-fold (default 5, stratified, seeded; fewer when a class has fewer images) training of
  a standardised logistic regression on those features: every image is scored by a model that never saw it.
  Classes with fewer than 2 images are left out of the search.
* Ranking: ``cleanlab.filter.find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")``:
  confident learning, not a threshold of our own. Each suspect carries its given class, the suggested one (the
  class with the highest out-of-fold probability), that probability ("confidence") and the given class's.

Decisions on suspects (exclude / keep) belong to the saved dataset: ``core.workspace.decisions``.

Importing this module does not load TensorFlow or scikit-learn (``find_label_issues`` does), so a page can read
results and decisions without them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from core.data.dataset import Dataset, load_dataset
from core.util.errors import UserError
from core.workspace import access, datasets, records, runs

FILE = "label_issues.json"  # in the run folder
FORMAT = 1
DEFAULT_FOLDS = 5
MIN_FOLDS = 2
FEATURES, FOLDS = "features", "folds"  # progress stages: images through the frozen layers, folds fitted

Progress = Callable[[str, int, int], None]  # (stage, done, total); may raise to cancel


@dataclass
class LabelIssues:
    """What a search found; ``to_dict``/``from_dict`` are the label_issues.json format."""

    run: str
    classes: list[str]
    images: int  # images searched (training + validation)
    folds: int
    features: str  # one sentence: which layer's output the classifier was trained on
    fine_tuned: bool  # those layers were trained on these labels (the run froze nothing)
    out_of_fold_accuracy: float  # how often the out-of-fold classifier agrees with the given label
    suspects: list[dict[str, Any]]  # {"file", "given", "suggested", "confidence", "given_probability"}, worst first
    dataset_id: str = ""  # the saved dataset the decisions belong to; "" for a run trained from a zip path
    dataset: str = ""  # its name
    root: str = ""  # the folder ``file`` paths are relative to
    warnings: list[str] = field(default_factory=list)
    created: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelIssues:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------------------- the pure part


def fold_count(labels: np.ndarray, folds: int = DEFAULT_FOLDS) -> int:
    """Folds for stratified k-fold: ``folds``, or fewer when the smallest class has fewer images (at least 2)."""
    if folds < MIN_FOLDS:
        raise UserError(f"The search needs at least {MIN_FOLDS} folds (got {folds}).")
    smallest = min(Counter(labels.tolist()).values())
    return max(MIN_FOLDS, min(folds, smallest))


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """(probabilities (n, num_classes), folds used): each image scored by a classifier fitted without it.

    The classifier is scikit-learn's logistic regression on standardised features: cheap, convex (no seed decides
    what it learns) and well enough calibrated for confident learning. Every class in ``labels`` needs at least 2
    images; a class absent from ``labels`` gets probability 0.
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    k = fold_count(y, folds)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probs = np.zeros((len(y), num_classes), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    if progress:
        progress(0, k)
    for i, (fit_idx, test_idx) in enumerate(splitter.split(x, y), start=1):
        model = clone(pipe).fit(x[fit_idx], y[fit_idx])
        # Stratified folds with k <= the smallest class: every class is in every fitting part, so the columns of
        # predict_proba are ``present`` in order.
        probs[np.ix_(test_idx, model.classes_)] = model.predict_proba(x[test_idx])
        if progress:
            progress(i, k)
    return probs, k


def rank_suspects(labels: np.ndarray, probs: np.ndarray, classes: list[str], files: list[str]) -> list[dict]:
    """Suspected label errors, most suspicious first, by cleanlab's confident learning (ranked by self-confidence:
    the out-of-fold probability of the given label, lowest first)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues

    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)  # cleanlab wants every column to be a class with examples
    index = {c: i for i, c in enumerate(present)}
    p = probs[:, present]
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    compact = np.array([index[v] for v in y])
    ranked = cleanlab_issues(compact, p, return_indices_ranked_by="self_confidence")
    out = []
    for i in ranked:
        suggested = int(probs[i].argmax())
        out.append(
            {
                "file": files[i],
                "given": classes[y[i]],
                "suggested": classes[suggested],
                "confidence": round(float(probs[i, suggested]), 6),
                "given_probability": round(float(probs[i, y[i]]), 6),
            }
        )
    return out


def pooled(features: np.ndarray, spatial: tuple[int, ...] | None = None) -> np.ndarray:
    """One vector per image: a spatial output (n, h, w, c) averaged over its positions; a flattened spatial one
    (``spatial`` = its (h, w, c)) put back in shape first (Keras flattens channels-last, row by row)."""
    f = np.asarray(features, dtype=np.float32)
    if spatial is not None and f.ndim == 2 and len(spatial) == 3 and int(np.prod(spatial)) == f.shape[1]:
        f = f.reshape(len(f), *spatial)
    if f.ndim > 2:
        f = f.reshape(len(f), -1, f.shape[-1]).mean(axis=1)
    return f


# ---------------------------------------------------------------------------------------------- a saved run


def find_label_issues(
    run_dir: str | os.PathLike,
    dataset: Dataset | None = None,
    folds: int = DEFAULT_FOLDS,
    progress: Progress | None = None,
    cache=None,
    user: str = access.GUEST,
) -> LabelIssues:
    """Search the run's training and validation images for suspected label errors; save label_issues.json.

    ``dataset``: the saved dataset the run was trained on, when the caller has it open (a job does); otherwise it
    is opened from the run's ``dataset_id``, or scanned again from the folder its ``split.json`` records.

    It replaces the run's label_issues.json, so only the run's owner or an admin may (core.workspace.access).

    Raises:
        NotAllowed: ``user`` may not change the run.
        UserError: not a run, the images are gone, too few images, or fewer than 2 folds asked for.

    Long: the search reads top to bottom (images, features, folds, ranking, result) with its progress and
    stops between; each stage is a call already.
    """
    started = time.monotonic()
    run = runs.read_run(run_dir)
    access.check(user, run.owner, f"check the labels of the run {run.id}")
    if folds < MIN_FOLDS:
        raise UserError(f"The search needs at least {MIN_FOLDS} folds (got {folds}).")
    ds, files = _images(run, dataset)
    by_path = {it.path: it for it in ds.items}
    index = {c: i for i, c in enumerate(run.classes)}
    warnings = []
    items = [by_path[f] for f in files if ds.classes[by_path[f].label] in index]
    labels = np.array([index[ds.classes[it.label]] for it in items], dtype=np.int64)
    counts = Counter(labels.tolist())
    tiny = sorted(run.classes[c] for c, n in counts.items() if n < 2)
    if tiny:
        warnings.append(
            f"Classes with fewer than 2 images cannot be cross-validated and were left out: {', '.join(tiny)}."
        )
        keep = np.array([counts[v] >= 2 for v in labels], dtype=bool)
        items, labels = [it for it, k in zip(items, keep, strict=True) if k], labels[keep]
    if len(set(labels.tolist())) < 2:
        raise UserError(f"The run {run.id} has fewer than 2 classes with at least 2 images: nothing to compare.")

    def features_progress(done: int, total: int) -> None:
        if progress:
            progress(FEATURES, done, total)

    paths = [str(ds.root / it.path) for it in items]
    x, sentence, fine_tuned = _features(run, paths, features_progress, cache)
    if fine_tuned:
        warnings.append(
            "This run froze no layer, so these features come from layers fine-tuned on the very labels under "
            "suspicion: a wrong label the model has learnt may look right. A run that keeps VGG16's convolutions "
            "frozen finds more."
        )
    probs, k = out_of_fold_probabilities(
        x, labels, len(run.classes), folds, seed=run.config.seed,
        progress=(lambda d, t: progress(FOLDS, d, t)) if progress else None,
    )  # fmt: skip
    rel = [it.path for it in items]
    found = LabelIssues(
        run=run.id,
        classes=list(run.classes),
        images=len(items),
        folds=k,
        features=sentence,
        fine_tuned=fine_tuned,
        out_of_fold_accuracy=float(np.mean(probs.argmax(axis=1) == labels)),
        suspects=rank_suspects(labels, probs, run.classes, rel),
        dataset_id=ds.id,
        dataset=ds.title,
        root=str(ds.root.resolve()),
        warnings=warnings,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        seconds=round(time.monotonic() - started, 2),
    )
    runs.write_json(run.path / FILE, found.to_dict())
    return found


def _images(run: runs.RunInfo, dataset: Dataset | None) -> tuple[Dataset, list[str]]:
    """The dataset the run was trained on and its training + validation files (relative to its root)."""
    try:
        saved = runs.read_json(run.path / "split.json")
        files = [*saved.get("train", []), *saved.get("val", [])]
    except (OSError, ValueError, AttributeError):
        raise UserError(f"The run {run.id} has no readable split.json, so its training images are unknown.") from None
    if not files:
        raise UserError(f"The run {run.id} recorded no training images.")
    if dataset is None and run.dataset_id and records.exists(run.dataset_id):
        dataset = datasets.open_dataset(run.dataset_id, version=run.dataset_version)  # the version it trained on
    if dataset is None:
        root = saved.get("root")
        if not root or not Path(root).is_dir():
            raise UserError(
                f"The images the run {run.id} was trained on are no longer on disk (its dataset was a temporary "
                "copy, or was deleted): there is nothing to search."
            )
        dataset = load_dataset(root)
    known = {it.path for it in dataset.items}
    missing = [f for f in files if f not in known or not (dataset.root / f).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of the images the run {run.id} was trained on are no longer in its dataset "
            f"({missing[0]}, ...): there is nothing reliable to search."
        )
    return dataset, files


def _features(run: runs.RunInfo, paths: list[str], progress, cache) -> tuple[np.ndarray, str, bool]:
    """(one vector per image, which layer it came from in words, whether that layer was trained on the labels)."""
    import keras  # TensorFlow loads here, after every cheap check

    # TensorFlow loads here: pages import this module to read saved results
    from core.model.build import freeze
    from core.train.features import Plan, extract, plan_training
    from core.train.phases import phases

    # A fresh copy: freezing changes the layers' flags, and the copy Classify may hold is shared.
    model = keras.saving.load_model(run.path / "model.keras", compile=False, safe_mode=True)
    last = phases(run.config)[-1]  # a two-phase run's last phase: the layers that never trained
    freeze(model, last.unfreeze, last.blocks)
    plan = plan_training(model)
    fine_tuned = not plan.cached
    if fine_tuned:
        pools = [i for i, layer in enumerate(model.layers) if "pool" in type(layer).__name__.lower()]
        if not pools:
            raise UserError(f"The model of {run.id} has no pooling layer to take features from.")
        cut = pools[-1] + 1
        inp = keras.Input(tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype, name="image")
        x = inp
        for layer in model.layers[1:cut]:
            x = layer(x)
        plan = Plan(model, cut, keras.Model(inp, x, name="features"), None, "")
    last = model.layers[plan.cut - 1]
    spatial = None
    if isinstance(last, keras.layers.Flatten) and plan.cut >= 2:
        with contextlib.suppress(AttributeError, ValueError, TypeError):
            spatial = tuple(model.layers[plan.cut - 2].output.shape[1:])
    x = pooled(extract(plan, paths, run.config, cache, progress), spatial)
    which = "fine-tuned" if fine_tuned else "frozen"
    return x, f"the output of '{last.name}', the last {which} layer ({x.shape[1]:,} values per image)", fine_tuned


def load_label_issues(run_dir: str | os.PathLike) -> LabelIssues | None:
    """The run's saved search, or None when it has none (or one in another format)."""
    try:
        data = runs.read_json(Path(run_dir) / FILE)
        if data.get("format") != FORMAT:
            return None
        return LabelIssues.from_dict(data)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------- decisions
