"""How fast this server pushes images through VGG16, for time estimates shown before a run starts.

    speed = known_speed(224, "float32") or measure_speed(224, "float32")   # images per second
    est = estimate(config, n_train=245, n_val=153, speed=speed, unfrozen=["block5_conv3", ..., "predictions"])
    est.seconds, est.cached_seconds, est.text

Every feature pass that runs all of VGG16's convolutions records its measured speed in the cache folder
(``speed.json``), so estimates follow this machine; a size never measured is scaled from the nearest one
by pixel count.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.cache import cache_dir
from core.config import TrainConfig

FILE = "speed.json"
# Keras' fit runs VGG16's layers without XLA and with training bookkeeping: measured 1.4x slower per image than
# the compiled feature pass that records the speed (ants/bees, 224 px, flip + rotation, 2 epochs: 286 s vs 202 s).
FIT_FACTOR = 1.4
_lock = threading.Lock()

# Multiply-accumulates of each VGG16 convolution at 224 px, in GMAC (they all scale with the pixel count).
# Backpropagation through a layer costs about twice its forward pass, and only unfrozen layers need it.
CONV_GMAC = {
    "block1_conv1": 0.087, "block1_conv2": 1.850,
    "block2_conv1": 0.925, "block2_conv2": 1.850,
    "block3_conv1": 0.925, "block3_conv2": 1.850, "block3_conv3": 1.850,
    "block4_conv1": 0.925, "block4_conv2": 1.850, "block4_conv3": 1.850,
    "block5_conv1": 0.462, "block5_conv2": 0.462, "block5_conv3": 0.462,
}  # fmt: skip


def _path() -> Path:
    return cache_dir() / FILE


def _read() -> dict[str, float]:
    try:
        data = json.loads(_path().read_text())
        return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def _key(image_size: int, precision: str) -> str:
    return f"{precision}/{image_size}"


def record_speed(image_size: int, precision: str, images_per_second: float) -> None:
    """Remember a measured speed (images per second through every VGG16 convolution)."""
    if not images_per_second > 0:
        return
    with _lock:
        data = _read()
        data[_key(image_size, precision)] = round(float(images_per_second), 3)
        path = _path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{FILE}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass  # an estimate is a nicety: a read-only cache folder must not fail a run


def known_speed(image_size: int, precision: str) -> float | None:
    """The measured speed at this size, or one measured at another size scaled by pixel count; None if never."""
    data = _read()
    if (hit := data.get(_key(image_size, precision))) is not None:
        return hit
    sizes = [(int(k.split("/")[1]), v) for k, v in data.items() if k.startswith(f"{precision}/")]
    if not sizes:
        return None
    size, speed = min(sizes, key=lambda sv: abs(sv[0] - image_size))
    return speed * (size / image_size) ** 2


def measure_speed(image_size: int, precision: str, images: int = 8) -> float:
    """Time VGG16's convolutions on random images at this size (random weights: the cost is the same) and record it."""
    from core.features import compiled
    from core.model import _vgg16, dtype_policy, resolve_precision

    with dtype_policy(resolve_precision(precision)):
        model = _vgg16(False, None, image_size)
    run = compiled(model)
    batch = np.random.default_rng(0).uniform(-120, 130, (images, image_size, image_size, 3)).astype("float32")
    run(batch[:images])  # compile and warm up
    start = time.perf_counter()
    run(batch).numpy()
    speed = images / (time.perf_counter() - start)
    record_speed(image_size, precision, speed)
    return speed


@dataclass
class Estimate:
    seconds: float  # the run as configured
    cached_seconds: float  # the same run without augmentation (frozen-layer outputs computed once)
    text: str


def estimate(config: TrainConfig, n_train: int, n_val: int, speed: float, unfrozen: list[str]) -> Estimate:
    """Rough time of a run from the measured forward speed; ``unfrozen`` names the layers that train (in phase 2
    of a two-phase run).

    With frozen-layer outputs cached, the frozen convolutions run once per image and every epoch runs only the
    unfrozen ones (forward and back for training images, forward for validation ones). With augmentation every
    epoch runs every training image through all of them.
    """
    share = sum(g for name, g in CONV_GMAC.items() if name in unfrozen) / sum(CONV_GMAC.values())
    phases = [(config.epochs, 0.0), (config.fine_tune_epochs, share)] if config.two_phase else [(config.epochs, share)]
    n = n_train + n_val

    def seconds(augmented: bool) -> float:
        total = 0.0
        for epochs, back in phases:
            if augmented:
                total += FIT_FACTOR * (epochs * (n_train * (1 + 2 * back) + n_val) + n_val)  # + the final score
            else:
                total += n * (1 - back) + FIT_FACTOR * epochs * (n_train * 3 * back + n_val * back)
        return total / speed

    run, cached = seconds(config.augmented), seconds(False)
    text = (
        f"about {human_time(run)} for {config.total_epochs} epochs of {n_train:,} training images "
        f"(this server: {speed:.1f} images/s through VGG16 at {config.image_size} px)"
    )
    return Estimate(seconds=run, cached_seconds=cached, text=text)


def human_time(seconds: float) -> str:
    """12 s, 3:20 min, 1:05 h: the same style as the progress bars' ETA."""
    s = max(round(seconds), 1)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d} min"
    return f"{s // 3600}:{s % 3600 // 60:02d} h"
