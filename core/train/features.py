"""Speed from structure: run the frozen prefix of the model once per image and train only the tail.

With the tutorial's freeze (every convolution frozen) each epoch would push every image through all of
VGG16 again. Instead:

    plan = plan_training(model)          # where the frozen prefix ends, and why the cache does or does not apply
    x = extract(plan, paths, config)     # prefix outputs, from the disk cache or computed (decode || compute)
    plan.tail.fit(x, y, ...)             # the tail shares its layers with ``model``: training it trains the model

The tail is built from the model's own layer objects, so after training the full model (prefix + tail) is one
ordinary Keras model with the trained weights; prediction and export see nothing special.
A frozen Dropout ends the prefix too: in training it still drops units, which a cached output cannot do.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np

from core.config import TrainConfig
from core.model.inputs import load_named
from core.train.cache import ArrayCache, settings_digest
from core.train.feature_file import STREAM_BYTES, FeatureFile
from core.train.phases import Layer, decide
from core.util.files import file_digest

FEATURE_BATCH = 16  # on 2 cores: 9 % slower than 32 but a quarter less peak memory
CACHE_FORMAT = 2  # 2: the crop/pad/stretch and resize are core.model.geometry's TensorFlow ops (1: Pillow's)
_STOCHASTIC = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)

Progress = Callable[[int, int], None]


@dataclass
class Plan:
    """How a model trains: ``prefix``/``tail`` set when a frozen prefix can be cached, else end to end."""

    model: keras.Model
    cut: int  # index in model.layers where the trainable tail starts
    prefix: keras.Model | None
    tail: keras.Model | None
    reason: str  # one sentence for the user: which path and why

    @property
    def cached(self) -> bool:
        return self.prefix is not None


def _stochastic(layer) -> bool:
    # a Dropout at rate 0 (core.model.build turns stochastic depth off in frozen backbones) is the identity
    return isinstance(layer, _STOCHASTIC) and getattr(layer, "rate", 1.0) != 0


def layer_facts(model: keras.Model) -> list[Layer]:
    """What ``core.train.phases.decide`` needs of each layer of a built model."""
    return [
        Layer(layer.name, bool(layer.weights), bool(layer.trainable and layer.weights), _stochastic(layer))
        for layer in model.layers
    ]


def prefix_end(model: keras.Model) -> int:
    """Index of the first layer that trains or is random in training: everything before it is a fixed function."""
    return decide(layer_facts(model)).cut


def plan_training(model: keras.Model, augment: bool = False) -> Plan:
    """Decide whether training can use cached prefix features (``core.train.phases.decide``); build the prefix and
    tail models when it can."""
    d = decide(layer_facts(model), augment)
    cut, layers_ = d.cut, model.layers
    if not d.cached:
        return Plan(model, cut, None, None, d.reason)
    if not model.name.startswith("vgg16"):
        return _split_graph(model, cut, d.reason)
    # The model is a chain, so calling its own layers again on new inputs builds the two halves with shared
    # weights (VGG16's layers also belong to the keras.applications graph, so `layer.output` is not ours).
    prefix_input = keras.Input(tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype, name="image")
    x = prefix_input
    for layer in layers_[1:cut]:
        x = layer(x)
    prefix = keras.Model(prefix_input, x, name="frozen_prefix")
    tail_input = keras.Input(tuple(x.shape[1:]), name="features")
    x = tail_input
    for layer in layers_[cut:]:
        x = layer(x)
    tail = keras.Model(tail_input, x, name="trainable_tail")
    return Plan(model, cut, prefix, tail, d.reason)


def _split_graph(model: keras.Model, cut: int, reason: str) -> Plan:
    """Prefix and tail of a backbone that is a graph, not a chain (residual blocks): cut at the input of the first
    layer that trains, which at a block's start is the one tensor the block takes. Where more than one tensor
    crosses the cut, Keras cannot make a tail that starts from one, and training goes end to end."""
    crossing = model.layers[cut].input
    try:
        tail = keras.Model(crossing, model.outputs[0], name="trainable_tail")
    except ValueError:
        return Plan(model, cut, None, None, "Training end to end: the first layer that trains is not where a block "
                    "starts, so no single frozen output can be computed once.")  # fmt: skip
    prefix = keras.Model(model.inputs[0], crossing, name="frozen_prefix")
    return Plan(model, cut, prefix, tail, reason)


def _prefix_identity(plan: Plan, config: TrainConfig) -> str:
    """Everything that decides a prefix output besides the image: its weights, size, resize, precision."""
    h = hashlib.blake2b(digest_size=16)
    for w in plan.prefix.weights:
        h.update(np.asarray(keras.ops.convert_to_numpy(w)).tobytes())
    facts = {} if config.backbone == "vgg16" else {"backbone": config.backbone, "cut": plan.cut}
    return settings_digest(
        {
            **facts,  # Keras numbers some layers of other backbones per process, so the cut's index names it
            "format": CACHE_FORMAT,
            "kind": "features",
            "layer": plan.model.layers[plan.cut - 1].name if config.backbone == "vgg16" else "",
            "weights": h.hexdigest(),
            "image_size": config.image_size,
            "resize": config.resize,
            "precision": next(layer for layer in plan.prefix.layers if layer.weights).dtype_policy.name,
        }
    )


def digests(paths: Sequence[str | os.PathLike]) -> list[str]:
    with ThreadPoolExecutor(min(8, (os.cpu_count() or 1) + 2)) as pool:
        return list(pool.map(file_digest, paths))


def compiled(model: keras.Model):
    """``model`` in inference mode as one compiled graph: no per-batch Python overhead of ``predict``.

    No XLA on a CPU: oneDNN's convolutions (on, core.settings.quiet_tensorflow) run VGG16 at ~97 % of what the CPU's
    own matrix product reaches, in float32 and bfloat16; XLA's ran it at a third of that at 224 px and a tenth at
    32 px (measured on a 2-core AVX2 EPYC). On a GPU XLA is used.
    """
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))
    return tf.function(lambda x: model(x, training=False), jit_compile=gpu, reduce_retracing=True, autograph=False)


def replicated(model: keras.Model, strategy) -> Callable[[np.ndarray], np.ndarray]:
    """``compiled`` for a model built under ``strategy``: each batch is split into equal parts, one per replica.

    The outputs come back in batch order. A batch that does not split evenly repeats its last image to fill the
    parts (the extra outputs are dropped), so no replica gets an empty part and all run the same shape. No XLA:
    a compiled cluster cannot read weights that live on another device than the one it runs on.
    """
    import tensorflow as tf

    devices = strategy.extended.worker_devices
    step = tf.function(
        lambda x: strategy.run(lambda part: model(part, training=False), args=(x,)),
        reduce_retracing=True,
        autograph=False,
    )

    def apply(batch: np.ndarray) -> np.ndarray:
        pad = -len(batch) % len(devices)
        parts = np.split(np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)]) if pad else batch, len(devices))

        def part(context):
            with tf.device(devices[context.replica_id_in_sync_group]):
                return tf.constant(parts[context.replica_id_in_sync_group])

        outputs = strategy.experimental_local_results(step(strategy.experimental_distribute_values_from_function(part)))
        return np.concatenate([np.asarray(out) for out in outputs])[: len(batch)]

    return apply


def read_ahead(pool: ThreadPoolExecutor, fn: Callable, items: Sequence, window: int) -> Iterator:
    """``fn(item)`` for each item in order, computed on ``pool`` at most ``window`` items ahead of the consumer:
    decoding overlaps the forward pass without holding a large dataset's images in memory."""
    pending: deque = deque()
    rest = iter(items)
    for item in itertools.islice(rest, window):
        pending.append(pool.submit(fn, item))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(rest, 1):
            pending.append(pool.submit(fn, item))
        yield result


def extract(
    plan: Plan,
    paths: Sequence[str | os.PathLike],
    config: TrainConfig,
    cache: ArrayCache | None = None,
    progress: Progress | None = None,
    stats: dict | None = None,
    stream: bool = False,
) -> np.ndarray | FeatureFile:
    """Prefix outputs for ``paths`` as one float32 array; cached ones are read, the rest decoded and computed.

    With ``stream`` and more than ``STREAM_BYTES`` of features, they go to a ``FeatureFile`` on disk instead, which
    the caller reads in batches and closes; memory then holds a batch, not the dataset.

    Decoding runs in a thread pool ahead of the compiled feature pass, so the two overlap. Inside a strategy's
    scope (``core.model.distribute``: training on several GPUs) each batch is split between its replicas.
    ``stats`` (if given) receives ``hits``, ``misses``, ``feature_seconds`` and ``vgg16_images_per_second``: the
    measured speed through all of VGG16's convolutions, or None when this pass did not measure it (too few images
    computed, or a prefix that ends earlier). Recording it for time estimates is the caller's job.
    """
    cache = cache or ArrayCache()
    namespace = _prefix_identity(plan, config)
    keys = digests(paths)
    shape = tuple(plan.prefix.output.shape[1:])
    big = stream and len(paths) * int(np.prod(shape)) * 4 > STREAM_BYTES
    out = (
        FeatureFile.create(cache.root / "scratch", len(paths), shape)
        if big
        else np.empty((len(paths), *shape), np.float32)
    )
    put = out.write if big else out.__setitem__
    try:
        missing = _read_cached(cache, namespace, keys, shape, put, progress)
        stats_ = _compute(plan, paths, config, cache, namespace, keys, missing, put, progress)
    except BaseException:
        if big:
            out.close()
        raise
    if stats is not None:
        stats.update(stats_)
    return out


def _read_cached(cache: ArrayCache, namespace: str, keys: list[str], shape, put, progress) -> list[int]:
    """Put every cached row; return the indices of the others."""
    missing = []
    for i, key in enumerate(keys):
        hit = cache.get(namespace, key)
        if hit is not None and hit.shape == shape:
            put(i, hit)
        else:
            missing.append(i)
    if progress:
        progress(len(keys) - len(missing), len(keys))
    return missing


def _compute(plan: Plan, paths, config: TrainConfig, cache, namespace, keys, missing, put, progress) -> dict:
    """Decode and run the prefix on the ``missing`` images, putting and caching each row; return the stats."""
    done = len(paths) - len(missing)
    start = time.monotonic()
    if missing:
        import tensorflow as tf

        # Inside a strategy (core.model.distribute) its devices hold the weights, so it places the work too.
        strategy = tf.distribute.get_strategy()
        run = replicated(plan.prefix, strategy) if tf.distribute.has_strategy() else compiled(plan.prefix)
        size, resize = config.image_size, config.resize
        pool = ThreadPoolExecutor(min(8, (os.cpu_count() or 1) + 2))
        try:
            decoded = read_ahead(pool, lambda i: load_named(paths[i], size, resize), missing, 4 * FEATURE_BATCH)
            for b in range(0, len(missing), FEATURE_BATCH):
                idx = missing[b : b + FEATURE_BATCH]
                batch = np.stack([next(decoded) for _ in idx])
                feats = np.asarray(keras.ops.convert_to_numpy(run(batch)), dtype=np.float32)
                for j, i in enumerate(idx):
                    put(i, feats[j])
                    cache.put(namespace, keys[i], feats[j])
                done += len(idx)
                if progress:
                    progress(done, len(paths))  # may raise to cancel: pending decodes are dropped below
        finally:
            pool.shutdown(cancel_futures=True)
        cache.trim()
    seconds = time.monotonic() - start
    # Only a pass through every convolution, over at least one full batch, measures the speed that time
    # estimates scale from (core.train.pace); the caller records it.
    full = len(missing) >= FEATURE_BATCH and any(layer.name == "block5_conv3" for layer in plan.prefix.layers)
    return {
        "hits": len(paths) - len(missing),
        "misses": len(missing),
        "feature_seconds": seconds,
        "vgg16_images_per_second": len(missing) / seconds if full and seconds > 0 else None,
    }


def load_images_cached(
    paths: Sequence[str | os.PathLike],
    size: int,
    resize: str,
    cache: ArrayCache | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Decoded uint8 images for end-to-end training, through the same disk cache (keyed by content)."""
    cache = cache or ArrayCache()
    namespace = settings_digest({"format": CACHE_FORMAT, "kind": "image", "size": size, "resize": resize})
    keys = digests(paths)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def one(i: int) -> None:
        arr = cache.get(namespace, keys[i])
        if arr is None or arr.shape != out.shape[1:]:
            arr = load_named(paths[i], size, resize)
            cache.put(namespace, keys[i], arr)
        out[i] = arr

    pool = ThreadPoolExecutor(min(8, (os.cpu_count() or 1) + 2))
    try:
        for n, _ in enumerate(pool.map(one, range(len(paths))), start=1):
            if progress:
                progress(n, len(paths))
    finally:
        pool.shutdown(cancel_futures=True)
    cache.trim()
    return out
