"""Prediction with a saved run: load once (Keras safe_mode), classify images in batches.

    run = load_run("runs/ants")
    for p in predict(run, ["a.jpg", "b.png"], top_k=3):
        print(p.name, p.top if p.ok else p.error)

Images go through ``core.images.load_image`` with the run's own size and resize strategy, exactly as in training.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core import model as _model  # noqa: F401  registers VGGPreprocess for loading
from core import runs
from core.config import TrainConfig
from core.errors import UserError
from core.images import ImageError, Source, load_image

BATCH = 32
MAX_LOADED = 4
_cache: OrderedDict[tuple[str, float], Run] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass
class Run:
    path: Path
    model: keras.Model
    classes: list[str]
    config: TrainConfig
    info: dict
    _infer: object = field(default=None, repr=False)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch, through one compiled graph rather than ``model.predict``."""
        if self._infer is None:
            import tensorflow as tf

            self._infer = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        out = [np.asarray(self._infer(images[i : i + BATCH]), dtype=np.float32) for i in range(0, len(images), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


@dataclass
class Prediction:
    name: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), most likely first
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def load_run(path: str | os.PathLike) -> Run:
    """Load a saved run: one load per run per process; a re-saved model is loaded again, old ones are dropped."""
    path = runs.check_run(path).resolve()
    key = (str(path), (path / "model.keras").stat().st_mtime)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        for stale in [k for k in _cache if k[0] == key[0]]:
            del _cache[stale]
        try:
            model = keras.saving.load_model(path / "model.keras", compile=False, safe_mode=True)
        except Exception as exc:
            raise UserError(f"The model in {path.name} cannot be loaded ({exc}).") from None
        _cache[key] = Run(
            path=path,
            model=model,
            classes=list(runs.read_json(path / "classes.json")),
            config=TrainConfig.from_dict(runs.read_json(path / "config.json")),
            info=runs.read_json(path / runs.MARKER),
        )
        while len(_cache) > MAX_LOADED:  # a vgg-fc model holds ~540 MB
            _cache.popitem(last=False)
        return _cache[key]


def predict(run: Run, sources: list[Source], top_k: int = 3, names: list[str] | None = None) -> list[Prediction]:
    """Top-k classes for each image; a file that is not a usable image gets an error and the rest still classify."""
    names = names or [Path(s).name if not isinstance(s, bytes) else f"image {i + 1}" for i, s in enumerate(sources)]
    size, resize = run.config.image_size, run.config.resize

    def decode(source: Source):
        try:
            return load_image(source, size, resize), None
        except ImageError as exc:
            return None, str(exc)
        except OSError as exc:
            return None, f"cannot be read ({exc.strerror or exc})"

    with ThreadPoolExecutor(min(8, (os.cpu_count() or 1) + 2)) as pool:
        decoded = list(pool.map(decode, sources))
    good = [i for i, (arr, _) in enumerate(decoded) if arr is not None]
    probs = run.probabilities(np.stack([decoded[i][0] for i in good])) if good else np.zeros((0, 0))
    k = max(1, min(top_k, len(run.classes)))
    results = [Prediction(name, error=err) for name, (_, err) in zip(names, decoded, strict=True)]
    for row, i in zip(probs, good, strict=True):
        order = np.argsort(row)[::-1][:k]
        results[i].top = [(run.classes[j], float(row[j])) for j in order]
    return results
