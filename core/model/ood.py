"""How unlike every class an image is, to answer "none of these": from the features the model's last layer reads.

    fitted = fit(train_features, train_labels)              # class means, one shared (tied) shrunk covariance
    fitted.scores(features)                                 # smallest squared Mahalanobis distance to a class mean
    state = fit_run(train_f, train_y, val_f, val_y, classes, rate=0.05)   # + threshold, held-out classes
    save(run_dir, state) / load(run_dir) / reason(run_dir)  # <run>/none_of_these.npz and none_of_these.json
    two = score_model(model, state)                         # uint8 images -> [probabilities, score]

The method is Lee et al. 2018 ("A Simple Unified Framework for Detecting Out-of-Distribution Samples and
Adversarial Attacks"): the penultimate features (the input of the Dense named "predictions") of each class are
modelled as a Gaussian around the class mean with one covariance shared by every class; an image's score is its
smallest squared Mahalanobis distance to a class mean. Training sets are small and the features wide (256-4096),
so the covariance is shrunk toward a scaled identity by the Ledoit-Wolf rule (2004), which needs no tuning. The
threshold is the (1 - rate) quantile of the validation images' scores: about ``rate`` of the images of the
known classes are called "none of these" by mistake (the false-alarm rate the user chose, TrainConfig's
``none_of_these_rate``). Each class held out in turn (fitted without it, its validation images scored) says how
well a kind of image the run never saw is caught.

The fit is numpy, in float64 (a loaded run keeps its constants as saved, in float32); the covariance is whitened
through its Cholesky factor, and each class held out takes its share out of the pooled moments rather than fitting
again. ``MahalanobisScore`` is the same score as a Keras layer whose fitted constants are non-trainable float32
weights, so a model that carries it (``score_model``) saves in a .keras file, traces in tf.function with XLA, and
can be exported as it is.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np
from keras import ops
from scipy.linalg import solve_triangular

from core.workspace import runs

FILE = "none_of_these.json"  # what was fitted, the threshold, or why the run cannot say
ARRAYS = "none_of_these.npz"  # the fitted constants: center, whiten, means
FORMAT = 1
METHOD = "mahalanobis-tied-ledoit-wolf"
LAYER = "predictions"  # the model's last layer: the penultimate features are its input
MIN_IMAGES = 10  # fewer validation images than this say nothing about a quantile
MAX_FEATURES = 8192  # the whitening matrix is features x features floats
MAX_HELD_OUT = 20  # classes held out in turn at most (evenly spread over the classes)
RELATIVE_FLOOR = 1e-6  # no variance below this share of the mean one: identical images must not divide by 0


# ---------------------------------------------------------------------------------------------- the fit


@dataclass
class Fit:
    """Class means and a whitening matrix of the shrunk shared covariance."""

    means: np.ndarray  # (classes fitted, features)
    labels: np.ndarray  # (classes fitted,): the class index of each mean
    center: np.ndarray  # (features,): the mean of every training feature, subtracted first (float32 precision)
    whiten: np.ndarray  # (features, features): W with W W^T = the shrunk covariance's inverse
    shrinkage: float  # the Ledoit-Wolf weight of the scaled identity, 0-1

    def distances(self, features) -> np.ndarray:
        """(images, classes fitted): the squared Mahalanobis distance of each image to each class mean."""
        z = (np.asarray(features, np.float64) - self.center) @ self.whiten
        a = (self.means - self.center) @ self.whiten
        d2 = (z * z).sum(axis=1, keepdims=True) - 2.0 * z @ a.T + (a * a).sum(axis=1)
        return np.maximum(d2, 0.0)

    def scores(self, features) -> np.ndarray:
        """(images,): the smallest squared Mahalanobis distance to a class mean; higher is more unlike."""
        return self.distances(features).min(axis=1) if len(features) else np.zeros(0)


def _within_class(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in labels])
    return labels, means, x - means[np.searchsorted(labels, y)]


def _moments(dev: np.ndarray) -> tuple[np.ndarray, float, int]:
    """What the shrunk covariance needs of deviations from the class means: their scatter, the sum of their
    squared norms squared, their number. Sums, so that a class's share can be taken out exactly."""
    return dev.T @ dev, float(((dev * dev).sum(axis=1) ** 2).sum()), len(dev)


def _from_moments(moments, means, labels, center, scale: float) -> Fit:
    """The fit from the pooled moments: Ledoit-Wolf's weight, the shrunk covariance, a whitening matrix of it."""
    scatter, fourth, n = moments
    d = len(scatter)
    cov = scatter / n
    mu = float(np.trace(cov)) / d  # the scaled identity's scale: the mean variance
    # Ledoit-Wolf: weight = min(1, b2 / d2), b2 the estimated error of the sample covariance, d2 its distance to
    # mu * I, both in the Frobenius norm; b2 from the deviations' fourth moments, so no image is needed again.
    frob2 = float((cov * cov).sum())
    d2 = frob2 - d * mu**2
    b2 = max(fourth / n - frob2, 0.0) / n
    shrinkage = 1.0 if d2 <= 0 else min(1.0, b2 / d2)
    floor = RELATIVE_FLOOR * (mu if mu > 0 else max(scale, 1.0))
    sigma = (1.0 - shrinkage) * cov + np.eye(d) * max(shrinkage * mu, floor)
    # Any W with W W^T = sigma^-1 whitens: L^-T from the Cholesky factor (sigma = L L^T) costs a tenth of an
    # eigendecomposition at 4096 features.
    chol = np.linalg.cholesky(sigma)
    whiten = solve_triangular(chol, np.eye(d), lower=True).T
    return Fit(means, labels, center, whiten, float(shrinkage))


def fit(features, labels) -> Fit:
    """Class means and one Ledoit-Wolf-shrunk covariance of the deviations from them (pooled over the classes)."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    if x.ndim != 2 or len(x) != len(y) or not len(y):
        raise ValueError(f"features must have shape (n, d) with n = len(labels) > 0. Received: shape={x.shape}")
    labels_, means, dev = _within_class(x, y)
    return _from_moments(_moments(dev), means, labels_, x.mean(axis=0), float(np.mean(x * x)))


def threshold(scores, rate: float) -> float:
    """The (1 - rate) quantile of in-distribution scores: above it, "none of these"."""
    return float(np.quantile(np.asarray(scores, np.float64), 1.0 - rate))


def auroc(inside, outside) -> float | None:
    """Area under the ROC curve of telling ``outside`` (should score high) from ``inside`` by the score, from
    average ranks (Mann-Whitney U); None when either side is empty. 1: perfect, 0.5: chance."""
    a, b = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    if not len(a) or not len(b):
        return None
    both = np.concatenate([a, b])
    ranks = np.empty(len(both))
    ranks[np.argsort(both, kind="mergesort")] = np.arange(1, len(both) + 1)
    _, which, counts = np.unique(both, return_inverse=True, return_counts=True)
    ranks = (np.bincount(which, weights=ranks) / counts)[which]  # ties share their mean rank
    return float((ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def held_out_classes(train_f, train_y, val_f, val_y, classes: list[str], rate: float) -> list[dict[str, Any]]:
    """Each class held out in turn (at most ``MAX_HELD_OUT``): fitted on the other classes' training images,
    thresholded on their validation images, and its own validation images scored as never-seen ones.

    Exactly a fit from scratch without the class, but cheap: the other classes' means and deviations do not change,
    so the class's share of the pooled moments is taken out of them.
    """
    x, val_f = np.asarray(train_f, np.float64), np.asarray(val_f, np.float64)
    y, val_y = np.asarray(train_y, np.int64), np.asarray(val_y)
    usable = [k for k in range(len(classes)) if (val_y == k).any() and (y != k).any() and (val_y != k).any()]
    if len(usable) > MAX_HELD_OUT:
        usable = [usable[i] for i in np.linspace(0, len(usable) - 1, MAX_HELD_OUT).round().astype(int)]
    if not usable:
        return []
    labels, means, dev = _within_class(x, y)
    scatter, fourth, n = _moments(dev)
    scale, rows = float(np.mean(x * x)), []
    for k in usable:
        keep = labels != k
        own = _moments(dev[y == k])
        moments = (scatter - own[0], fourth - own[1], n - own[2])
        fitted = _from_moments(moments, means[keep], labels[keep], x[y != k].mean(axis=0), scale)
        inside, outside = fitted.scores(val_f[val_y != k]), fitted.scores(val_f[val_y == k])
        at = threshold(inside, rate)
        rows.append({"class": classes[k], "images": len(outside), "flagged": float(np.mean(outside > at)),
                     "auroc": auroc(inside, outside)})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------- a run's record


@dataclass
class State:
    """What a run knows to answer "none of these": the fit, the threshold and how it did on validation."""

    fit: Fit
    threshold: float
    rate: float
    classes: list[str]
    train_images: int
    validation_images: int
    validation_flagged: float  # share of the validation images above the threshold: about ``rate``
    validation_scores: list[float] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)  # held_out_classes
    method: str = METHOD
    created: str = ""

    @property
    def feature_size(self) -> int:
        return int(self.fit.center.shape[0])

    def flags(self, scores) -> np.ndarray:
        """True where an image is unlike every class: its score above the threshold."""
        return np.asarray(scores, np.float64) > self.threshold

    @property
    def nbytes(self) -> int:
        """Memory held once loaded: the float32 arrays, and as much again in the layer's weights once it answers."""
        return 8 * (self.fit.whiten.size + self.fit.means.size + self.fit.center.size)

    def record(self) -> dict[str, Any]:
        """none_of_these.json (the arrays go to none_of_these.npz)."""
        return {
            "format": FORMAT, "fitted": True, "method": self.method, "layer": LAYER, "rate": self.rate,
            "threshold": self.threshold, "feature_size": self.feature_size, "classes": self.classes,
            "shrinkage": self.fit.shrinkage, "train_images": self.train_images,
            "validation_images": self.validation_images, "validation_flagged": self.validation_flagged,
            "validation_scores": self.validation_scores, "held_out": self.held_out, "created": self.created,
        }  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """For metrics.json."""
        return {"method": self.method, "rate": self.rate, "threshold": round(self.threshold, 4),
                "validation_flagged": self.validation_flagged, "feature_size": self.feature_size}  # fmt: skip


def why_not(rate: float, validation_images: int, feature_size: int | None = None) -> str:
    """Why a run cannot fit "none of these" (a sentence), or "" when it can."""
    if not rate:
        return "this run turned it off (--none-of-these-rate 0)."
    if validation_images < MIN_IMAGES:
        return f"only {validation_images} validation images; the threshold needs at least {MIN_IMAGES}."
    if feature_size is not None and feature_size > MAX_FEATURES:
        return f"the model's last layer reads {feature_size} features; at most {MAX_FEATURES} can be modelled."
    return ""


def fit_run(train_f, train_y, val_f, val_y, classes: list[str], rate: float) -> State:
    """Fit on the training images' features, threshold on the validation images', hold each class out in turn."""
    fitted = fit(train_f, train_y)
    val_scores = fitted.scores(val_f)
    at = threshold(val_scores, rate)
    return State(
        fit=fitted, threshold=at, rate=float(rate), classes=list(classes), train_images=len(train_y),
        validation_images=len(val_y), validation_flagged=float(np.mean(val_scores > at)),
        validation_scores=[round(float(s), 4) for s in val_scores],
        held_out=held_out_classes(train_f, train_y, val_f, val_y, classes, rate),
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )  # fmt: skip


def save(run_dir: str | os.PathLike, state: State | None, reason: str = "") -> None:
    """The run's record: the arrays and the json, or only a json saying why the run cannot say."""
    run_dir = Path(run_dir)
    if state is None:
        runs.write_json(run_dir / FILE, {"format": FORMAT, "fitted": False, "reason": reason})
        return
    f = state.fit
    with open(run_dir / ARRAYS, "wb") as out:
        np.savez(out, center=f.center.astype(np.float32), whiten=f.whiten.astype(np.float32),
                 means=f.means.astype(np.float32), labels=f.labels)  # fmt: skip
    runs.write_json(run_dir / FILE, state.record())


def load(run_dir: str | os.PathLike) -> State | None:
    """The run's fitted state, or None: a run from before "none of these" existed, one that turned it off or had
    too few validation images, or an unreadable record. None means the run cannot say."""
    run_dir = Path(run_dir)
    try:
        data = runs.read_json(run_dir / FILE)
        if not data.get("fitted") or data.get("format") != FORMAT:
            return None
        with np.load(run_dir / ARRAYS, allow_pickle=False) as arrays:
            # float32, as saved: a 4096-feature whitening matrix is 64 MB so, 128 MB in float64
            fitted = Fit(
                arrays["means"], arrays["labels"], arrays["center"], arrays["whiten"], float(data["shrinkage"])
            )
        d = int(data["feature_size"])
        if fitted.whiten.shape != (d, d) or fitted.center.shape != (d,) or fitted.means.shape[1:] != (d,):
            return None  # arrays of another fit than the record's
        names = set(State.__dataclass_fields__) - {"fit"}
        return State(fit=fitted, **{k: v for k, v in data.items() if k in names})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def reason(run_dir: str | os.PathLike) -> str:
    """Why the run cannot say "none of these", in a sentence ("" when it can)."""
    try:
        data = runs.read_json(Path(run_dir) / FILE)
    except (OSError, ValueError):
        return "the run was trained before “none of these” existed."
    return "" if data.get("fitted") else str(data.get("reason") or "it was not fitted.")


# ---------------------------------------------------------------------------------------------- Keras


@keras.saving.register_keras_serializable(package="core")
class MahalanobisScore(keras.layers.Layer):
    """Penultimate features (batch, features) -> (batch,) scores: the smallest squared Mahalanobis distance to a
    class mean, as ``Fit.scores``. The constants are non-trainable float32 weights, filled by ``from_state``
    (or by loading a saved model); the score is computed in float32 whatever the model's precision."""

    def __init__(self, features: int, classes: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.features, self.classes = int(features), int(classes)
        self.center = self.add_weight(shape=(self.features,), initializer="zeros", trainable=False, name="center")
        self.whiten = self.add_weight(shape=(self.features, self.features), initializer="identity", trainable=False,
                                      name="whiten")  # fmt: skip
        # The class means, centred and whitened, and their squared norms: computed once, in float64, by from_state.
        self.anchors = self.add_weight(shape=(self.classes, self.features), initializer="zeros", trainable=False,
                                       name="anchors")  # fmt: skip
        self.anchor_norms = self.add_weight(shape=(self.classes,), initializer="zeros", trainable=False,
                                            name="anchor_norms")  # fmt: skip

    @classmethod
    def from_state(cls, state: State, name: str = "none_of_these_score") -> MahalanobisScore:
        f = state.fit
        layer = cls(state.feature_size, len(f.means), name=name)
        anchors = (np.asarray(f.means, np.float64) - f.center) @ np.asarray(f.whiten, np.float64)
        layer.center.assign(f.center.astype(np.float32))
        layer.whiten.assign(f.whiten.astype(np.float32))
        layer.anchors.assign(anchors.astype(np.float32))
        layer.anchor_norms.assign((anchors * anchors).sum(axis=1).astype(np.float32))
        return layer

    def call(self, inputs):
        # Centred first, so that the expansion |z - a|^2 = |z|^2 - 2 z.a + |a|^2 keeps float32's digits.
        z = ops.matmul(ops.cast(inputs, "float32") - self.center, self.whiten)
        d2 = ops.sum(z * z, axis=-1, keepdims=True) - 2.0 * ops.matmul(z, ops.transpose(self.anchors))
        return ops.maximum(ops.min(d2 + self.anchor_norms, axis=-1), 0.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self):
        return {**super().get_config(), "features": self.features, "classes": self.classes}


def penultimate(model: keras.Model):
    """The tensor the model's "predictions" layer reads, in this model's own graph (a layer shared by several
    graphs, as training's tail shares the model's, has one input per graph: ``layer.input`` is the first)."""
    layer, node_index, _ = model.outputs[0]._keras_history
    if layer.name != LAYER:
        raise ValueError(f"the model's output must come from its '{LAYER}' layer. Received: '{layer.name}'")
    return layer._inbound_nodes[node_index].input_tensors[0]


def fits(model: keras.Model, state: State) -> bool:
    """Whether ``state`` was fitted on features of this model's size (its "predictions" layer reads as many)."""
    try:
        return int(penultimate(model).shape[-1]) == state.feature_size
    except (ValueError, AttributeError, IndexError, TypeError):
        return False


def features_model(model: keras.Model) -> keras.Model:
    """The model's inputs -> its penultimate features."""
    return keras.Model(model.inputs[0], penultimate(model), name="penultimate")


def score_model(model: keras.Model, state: State) -> keras.Model:
    """The model's inputs -> [probabilities, "none of these" score], one forward pass: the same layers and weights
    as ``model``, with a ``MahalanobisScore`` on its penultimate features. Compare the score with
    ``state.threshold``."""
    score = MahalanobisScore.from_state(state)(penultimate(model))
    return keras.Model(model.inputs[0], [model.outputs[0], score], name=f"{model.name}_with_none_of_these")
