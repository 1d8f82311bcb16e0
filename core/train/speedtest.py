"""The speed test: VGG16 timed on this machine (random weights: the cost is the same), its paces recorded.

    ips = measure_speed(96, "auto", progress=report, stop=stop)   # loads TensorFlow; records into core.train.pace

A page never runs it: it queues it as a job (``core.jobs.probes.measure_in_background``), and the command line's
``python -m core speed`` runs it in its own process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from core.config import HEAD_LAYERS, TrainConfig
from core.train import pace
from core.train.pace import record_precision, record_speed
from core.util.errors import Cancelled

PROBE_IMAGES = 16  # images per timed batch in the speed probe (the feature pass's batch); 8 above 128 px
STAGE = "measuring"  # the probe's stage, as its job reports its progress


def _best_seconds(fn, repeats: int = 2, enough: float = 2.0, each=None) -> float:
    """The fastest of ``repeats`` calls; one call that takes ``enough`` seconds is trusted alone. ``each()`` runs
    after every call."""
    times: list[float] = []
    while len(times) < repeats and sum(times) < enough:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if each is not None:
            each()
    return min(times)


def probe_images(image_size: int) -> int:
    return PROBE_IMAGES if image_size <= 128 else PROBE_IMAGES // 2  # half a minute at 224 px on 2 idle cores


def probe_batches(fit: bool = True) -> int:
    """Batches the probe runs at most: a first (compiling) one and two timed ones for the forward pass, and as many
    for each of the training step with every layer training, with only the head, and the validation step."""
    return 3 * (4 if fit else 1)


def measure_speed(
    image_size: int,
    precision: str,
    images: int | None = None,
    fit: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> float:
    """Time VGG16 here (random weights: the cost is the same), record it and return the forward speed.

    The forward speed is the compiled inference pass of every convolution (what a feature pass runs). With
    ``fit``, Keras' training step is timed too, with every layer training and with only the head training, and
    its validation step, each relative to the forward pass: what end-to-end epochs cost at this size.
    ``progress(STAGE, done, total)`` hears of every batch (``total`` is ``probe_batches(fit)``); ``stop`` is
    looked at between batches and ends the probe with ``Cancelled``, recording nothing.
    This loads TensorFlow; a process that must not (the web page) runs ``core.jobs.probes.measure_in_background``
    instead.

    Long: one timed sequence (forward, train every layer, train the head, validate) whose progress counts run
    across all of it.
    """
    total, done = probe_batches(fit), -1

    def tick(upto: int | None = None) -> None:
        """One more batch done (or every batch up to ``upto``, when a timing needed fewer calls)."""
        nonlocal done
        if stop is not None and stop.is_set():
            raise Cancelled("The speed test was stopped; nothing was recorded.")
        now = done + 1 if upto is None else upto
        if now != done:
            done = now
            if progress is not None:
                progress(STAGE, done, total)

    tick(0)  # the clock of the progress's time left starts before TensorFlow loads, which is part of the wait
    # TensorFlow loads here, inside the job or the command, after the first report: the wait is part of the test
    import numpy as np

    from core.model.build import _vgg16, build_model, compile_model, dtype_policy, freeze, resolve_precision
    from core.train.features import compiled

    images = images or probe_images(image_size)
    resolved = resolve_precision(precision)
    record_precision(precision, resolved)
    with dtype_policy(resolved):
        base = _vgg16(False, None, image_size)
    run = compiled(base)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (images, image_size, image_size, 3)).astype("uint8")
    floats = batch.astype("float32") - 120.0
    run(floats)  # compile and warm up
    tick()
    speed = images / _best_seconds(lambda: run(floats).numpy(), each=tick)
    tick(3)
    if not fit:
        record_speed(image_size, resolved, speed)
        return speed

    config = TrainConfig(weights="none", head="gap", image_size=image_size, unfreeze=10**6, optimizer="adam",
                         learning_rate=1e-6, decay=0.0, batch_size=images, precision=resolved)  # fmt: skip
    model = build_model(config, 2)
    labels = np.eye(2, dtype="float32")[np.arange(images) % 2]
    costs = {}
    for n, (name, unfreeze) in enumerate((("train_all", 10**6), ("fit_forward", HEAD_LAYERS["gap"])), start=1):
        freeze(model, unfreeze)
        compile_model(model, config)
        start = time.perf_counter()
        model.train_on_batch(batch, labels)  # builds the train graph
        first = time.perf_counter() - start
        tick()
        step = _best_seconds(lambda: model.train_on_batch(batch, labels), each=tick)
        tick(3 + 3 * n)
        costs[name] = step / images * speed
        costs["trace_train" if name == "train_all" else "trace_frozen"] = max(first - step, 0.0)
    model.test_on_batch(batch, labels)
    tick()
    costs["test"] = _best_seconds(lambda: model.test_on_batch(batch, labels), each=tick) / images * speed
    tick(total)
    with pace.update() as data:  # both at once: a reader that sees the speed sees the fit costs measured with it
        data["forward"][pace.key(image_size, resolved)] = round(speed, 3)
        data["fit"][pace.key(image_size, resolved)] = {k: round(v, 4) for k, v in costs.items()}
    return speed
