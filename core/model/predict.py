"""Prediction with a saved run: load once (Keras safe_mode), classify images in batches.

    run = load_run("runs/ants")
    for p in predict(run, ["a.jpg", "b.png"], top_k=3):
        print(p.name, p.answer, p.top if p.ok else p.error)    # the class, "none of these" or "not sure"
        p.none_of_these, p.score                                # None: the run cannot say (core.model.ood)

Images go through ``core.model.inputs.load_image`` with the run's own size and resize strategy, exactly as in
training.
Models answer in float32 even when trained in mixed precision, as every export does (``core.model.build.as_float32``),
with one exception that never changes an answer: on a CPU that runs bfloat16 fast (AMX or AVX512-BF16; setting
``CLASSIFIER_ANSWER_PRECISION``: auto, float32, bfloat16), ``predict`` first runs the images through a bfloat16 twin of
the model (about 3x faster there) and keeps its answer only where bfloat16's rounding cannot flip it: the top class
ahead of the second by at least ``MARGIN`` in probability, the top probability at least ``MARGIN`` from the "not sure"
threshold, and the "none of these" score at least ``SCORE_MARGIN`` (relative) from its threshold; every other image
is answered again in float32. Its probabilities then differ from float32's by bfloat16's rounding (about 1e-2);
evaluation (``exact=True``), the API's batches and every export stay float32.
A run that learnt what its classes look like (``core.model.ood``) also scores how unlike every class each image is,
in the same forward pass: above its threshold the answer is "none of these", whatever the probabilities say.

Loaded runs are kept in this process's one cache, most recently used last: at most ``MAX_LOADED`` of them, and
at most ``CLASSIFIER_MODEL_CACHE_MB`` megabytes of weights (default 2048; a vgg-fc model alone holds ~540 MB).
The least recently used go first; the run just loaded always stays. ``forget(path)`` drops a deleted run.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core.config import TrainConfig
from core.imaging.pillow import ImageError, Source
from core.model import build as _model  # also registers VGGPreprocess for loading
from core.model import calibration, ood
from core.model.inputs import load_image
from core.util.errors import UserError
from core.workspace import runs

BATCH = 32
NOT_SURE = "not sure"
NONE_OF_THESE = "none of these"
SAVED = "saved"  # predict's default threshold: the one saved with the run (core.model.calibration)
MAX_LOADED = 4
MARGIN = 0.1  # probability: bfloat16 changed VGG16's probabilities by < 0.02 on trained heads (benchmarks/train_speed)
SCORE_MARGIN = 0.1  # relative distance of a "none of these" score from its threshold
_cache: OrderedDict[tuple[str, float], Run] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass
class Run:
    path: Path
    model: keras.Model
    classes: list[str]
    config: TrainConfig
    info: dict
    nbytes: int = 0  # memory held by the model's weights
    ood: ood.State | None = None  # "none of these" (core.model.ood); None: the run cannot say
    _infer: object = field(default=None, repr=False)
    _fast: object = field(default=None, repr=False)  # the bfloat16 twin's graph; False: this run has none
    rechecked: int = 0  # images the bfloat16 twin answered too narrowly, answered again in float32
    answered_fast: int = 0  # images whose answer came from the bfloat16 twin

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(probabilities, "none of these" scores, flags) for a uint8 batch, through one compiled graph rather than
        ``model.predict``; the scores and flags are None for a run that cannot say. One forward pass gives both."""
        if self._infer is None:
            self._infer = self._graph(self.model)
        probs, scores = self._through(self._infer, images)
        return probs, scores, (self.ood.flags(scores) if scores is not None else None)

    def answers(self, images: np.ndarray, threshold: float | None = None):
        """``outputs``, from the bfloat16 twin where that cannot change the answer (the module's docstring)."""
        fast = self._fast_graph() if len(images) and fast_answers() else None
        if fast is None:
            return self.outputs(images)
        probs, scores = self._through(fast, images)
        again = ~_clear(probs, scores, threshold, self.ood.threshold if self.ood is not None else None)
        if again.any():
            exact, exact_scores, _ = self.outputs(images[again])
            probs[again] = exact
            if scores is not None:
                scores[again] = exact_scores
        self.rechecked += int(again.sum())
        self.answered_fast += int((~again).sum())
        return probs, scores, (self.ood.flags(scores) if scores is not None else None)

    def _graph(self, model):
        import tensorflow as tf

        model = ood.score_model(model, self.ood) if self.ood is not None else model
        return tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def _fast_graph(self):
        if self._fast is None:
            try:
                twin = _model.as_bfloat16(self.model)
                self._fast = self._graph(twin)
                self.nbytes += weights_bytes(twin)  # a second copy of the weights, counted at the next load
            except Exception:
                self._fast = False
        return self._fast or None

    def _through(self, graph, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        probs, scores = [], []
        for i in range(0, len(images), BATCH):
            out = graph(images[i : i + BATCH])
            if self.ood is not None:
                out, score = out
                scores.append(np.asarray(score, dtype=np.float64))
            probs.append(np.asarray(out, dtype=np.float32))
        probs = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), np.float32)
        if self.ood is None:
            return probs, None
        return probs, np.concatenate(scores) if scores else np.zeros(0)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (``outputs``' first part)."""
        return self.outputs(images)[0]


def fast_answers() -> bool:
    """Whether ``predict`` tries the bfloat16 twin first: ``CLASSIFIER_ANSWER_PRECISION``, auto meaning a CPU with
    AMX or AVX512-BF16 and no GPU."""
    choice = settings.current().answer_precision
    if choice != "auto":
        return choice == "bfloat16"
    if not _model.cpu_has_fast_bf16():
        return False
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def _clear(probs: np.ndarray, scores, threshold: float | None, score_threshold: float | None) -> np.ndarray:
    """Per image: True where bfloat16's rounding cannot change the answer (``MARGIN``, ``SCORE_MARGIN``)."""
    ranked = np.sort(probs, axis=1)
    top = ranked[:, -1]
    clear = top - (ranked[:, -2] if probs.shape[1] > 1 else 0.0) >= MARGIN
    if threshold is not None:
        clear &= np.abs(top - threshold) >= MARGIN
    if scores is not None and score_threshold is not None:
        clear &= np.abs(scores - score_threshold) >= SCORE_MARGIN * abs(score_threshold)
    return clear


@dataclass
class Prediction:
    name: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), most likely first
    error: str | None = None
    threshold: float | None = None  # the run's "not sure" threshold when this was classified (None: none)
    none_of_these: bool | None = None  # unlike every class (core.model.ood); None: the run cannot say
    score: float | None = None  # how unlike: the smallest squared Mahalanobis distance to a class mean
    score_threshold: float | None = None  # above it, "none of these"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def sure(self) -> bool:
        """False when the top probability is below the run's threshold: the answer is "not sure"."""
        return self.ok and (self.threshold is None or self.top[0][1] >= self.threshold)

    @property
    def answer(self) -> str:
        """The class, "none of these" (unlike every class: before "not sure") or "not sure"; "" for an image that
        could not be read."""
        if not self.ok:
            return ""
        return NONE_OF_THESE if self.none_of_these else self.top[0][0] if self.sure else NOT_SURE


def weights_bytes(model: keras.Model) -> int:
    """Memory held by a model's weights, from their shapes and dtypes (nothing is copied)."""
    total = 0
    for w in model.weights:
        bits = re.search(r"\d+", str(w.dtype))  # float32, bfloat16, int64...; bool takes a byte
        total += math.prod(w.shape) * (int(bits.group()) // 8 if bits else 1)
    return total


def cache_limit_bytes() -> int:
    """The weights memory the loaded-model cache may hold: ``$CLASSIFIER_MODEL_CACHE_MB`` megabytes."""
    return settings.current().megabytes("model_cache_mb")


def load_run(path: str | os.PathLike) -> Run:
    """Load a saved run: one load per run per process; a re-saved model is loaded again, old ones are dropped."""
    path = runs.check_run(path).resolve()
    key = (str(path), (path / "model.keras").stat().st_mtime)
    limit = cache_limit_bytes()
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        for stale in [k for k in _cache if k[0] == key[0]]:
            del _cache[stale]
        try:
            model = _model.as_float32(keras.saving.load_model(path / "model.keras", compile=False, safe_mode=True))
        except Exception as exc:
            raise UserError(f"The model in {path.name} cannot be loaded ({exc}).") from None
        state = ood.load(path)  # "none of these", kept with the model it was fitted for
        state = state if state is not None and ood.fits(model, state) else None
        _cache[key] = Run(
            path=path,
            model=model,
            classes=list(runs.read_json(path / "classes.json")),
            config=TrainConfig.from_dict(runs.read_json(path / "config.json")),
            info=runs.read_json(path / runs.MARKER),
            nbytes=weights_bytes(model) + (state.nbytes if state else 0),
            ood=state,
        )
        # Dropping the cache's reference frees a model once no page or job still holds its Run.
        while len(_cache) > 1 and (len(_cache) > MAX_LOADED or sum(r.nbytes for r in _cache.values()) > limit):
            _cache.popitem(last=False)
        return _cache[key]


def forget(path: str | os.PathLike) -> bool:
    """Drop a run from the cache (e.g. it was deleted); True if it was loaded. The folder need not exist any more."""
    target = str(Path(path).resolve())
    with _cache_lock:
        keys = [k for k in _cache if k[0] == target]
        for k in keys:
            del _cache[k]
    return bool(keys)


def decode_one(source: Source, size: int, resize: str) -> tuple[np.ndarray | None, str | None]:
    """A run's input for one image (its size and resize strategy), or None and a sentence saying why not."""
    try:
        return load_image(source, size, resize), None
    except ImageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"


def decode_all(run: Run, sources: list[Source]) -> list[tuple[np.ndarray | None, str | None]]:
    """``decode_one`` for each image, on a thread pool (Pillow and the resize release the GIL)."""
    size, resize = run.config.image_size, run.config.resize
    if len(sources) <= 1:
        return [decode_one(s, size, resize) for s in sources]
    with ThreadPoolExecutor(min(8, (os.cpu_count() or 1) + 2)) as pool:
        return list(pool.map(lambda s: decode_one(s, size, resize), sources))


def predict(
    run: Run,
    sources: list[Source],
    top_k: int = 3,
    names: list[str] | None = None,
    threshold: float | str | None = SAVED,
    exact: bool = False,
) -> list[Prediction]:
    """Top-k classes for each image; a file that is not a usable image gets an error and the rest still classify.

    The probabilities are the saved model's, calibrated when the run was (the temperature is in its weights).
    Each prediction carries ``threshold`` (by default the run's saved one, read afresh: it can change on the
    Evaluate page): below it, ``answer`` is "not sure" and ``top`` still holds the best guesses. Each also carries
    its "none of these" score and flag (None for a run that cannot say), from the same forward pass; flagged, the
    answer is "none of these". ``exact``: float32 throughout (evaluation); otherwise the bfloat16 twin answers
    where it cannot change the answer (the module's docstring).
    """
    if threshold == SAVED:
        threshold = calibration.threshold_of(run.path)
    names = names or [Path(s).name if not isinstance(s, bytes) else f"image {i + 1}" for i, s in enumerate(sources)]
    decoded = decode_all(run, sources)
    good = [i for i, (arr, _) in enumerate(decoded) if arr is not None]
    answer = run.outputs if exact else (lambda x: run.answers(x, threshold))
    probs, scores, flags = answer(np.stack([decoded[i][0] for i in good])) if good else (np.zeros((0, 0)),) * 3
    k = max(1, min(top_k, len(run.classes)))
    results = [Prediction(name, error=err, threshold=threshold) for name, (_, err) in zip(names, decoded, strict=True)]
    for n, (row, i) in enumerate(zip(probs, good, strict=True)):
        order = np.argsort(row)[::-1][:k]
        results[i].top = [(run.classes[j], float(row[j])) for j in order]
        if scores is not None:
            results[i].score, results[i].none_of_these = float(scores[n]), bool(flags[n])
            results[i].score_threshold = run.ood.threshold
    return results
