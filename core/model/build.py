"""VGG16 transfer-learning model: backbone from ``keras.applications``, a new head, freezing, compiling.

    model = build_model(TrainConfig(weights="none", image_size=64), num_classes=3)
    describe_layers(model)        # rows for a layer table
    param_counts(model)           # {"trainable": ..., "frozen": ...}

The model is flat (input, preprocessing, VGG16's own layers, head), so "unfreeze the last K layers" counts
layers exactly as the tutorial counts ``model.layers``, and the frozen prefix can be cut off as a unit.
It takes uint8 RGB images; the first layer does VGG16's normalisation, so a saved model needs nothing else.
What can be known without TensorFlow (the layer table, the ImageNet weights' address and cache) is in
``core.model.vgg16``; this module builds the real thing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import warnings
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
from keras import layers, ops

from core.config import TrainConfig
from core.model import vgg16
from core.model.vgg16 import unfrozen_mask
from core.util.errors import UserError

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
_policy_lock = threading.Lock()


@keras.saving.register_keras_serializable(package="core")
class VGGPreprocess(layers.Layer):
    """uint8 RGB -> float BGR minus the ImageNet mean: ``keras.applications.vgg16.preprocess_input``, as a layer.

    Computed in float32 whatever the model's precision: bfloat16 cannot hold 255 - 103.939 exactly.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        return ops.flip(x, axis=-1) - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype="float32")

    def compute_output_shape(self, input_shape):
        return input_shape


# ---------------------------------------------------------------------------------------------- precision


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16, where oneDNN runs bfloat16 convolutions several times faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """Turn ``auto`` into the precision this machine runs fastest; pass explicit choices through."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if cc >= (8, 0):
            return "bfloat16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Build layers under a mixed policy without leaking it to other threads' models for longer than the build."""
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]
    with _policy_lock:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            yield
        finally:
            keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------------------------------- weights


def _vgg16(include_top: bool, weights, size: int) -> keras.Model:
    from keras.applications import VGG16

    return VGG16(include_top=include_top, weights=weights, input_shape=(size, size, 3))


def fetch_imagenet(include_top: bool) -> str:
    """Path of the ImageNet weights file in Keras' cache, downloading it once (checked, never hanging).

    Raises:
        OfflineWeights: not cached, and the download server cannot be reached.
    """
    vgg16.check_imagenet(include_top)
    url, path = vgg16.imagenet_url(include_top), vgg16.imagenet_cache_path(include_top)
    # Keras fixes its home when it is imported; naming the folder makes get_file use the one core.model.vgg16 checked.
    home = vgg16.weights_home()
    with contextlib.suppress(OSError):
        home.mkdir(parents=True, exist_ok=True)  # as Keras' import does: get_file would use /tmp for a missing one
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a stalled download fails instead of hanging the run forever
    try:
        return keras.utils.get_file(
            path.name, url, cache_subdir="models", cache_dir=str(home), file_hash=vgg16.IMAGENET_MD5[include_top]
        )
    except Exception as exc:
        if "URL fetch failure" in str(exc) or isinstance(exc, OSError):
            raise vgg16.offline_error(include_top) from None
        raise
    finally:
        socket.setdefaulttimeout(previous)


def _load_weights_quietly(model: keras.Model, path: Path) -> None:
    # A file that does not fit makes Keras warn once per layer before it raises: dozens of lines on the
    # terminal ahead of the one-sentence UserError that says the same thing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_weights(str(path))


def _file_backbone(include_top: bool, path: str, size: int) -> keras.Model:
    """Load a local VGG16 weights file (with or without the top layers) into the known topology."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"The weights file {path} does not exist; use 'imagenet', 'none' or an existing .h5 file.")
    if not p.name.endswith(".h5"):
        raise UserError(f"{p.name} is not a weights file: VGG16 weights come as an .h5 file.")
    backbone = _vgg16(include_top, None, size)
    try:
        _load_weights_quietly(backbone, p)
        return backbone
    except Exception:
        if include_top:
            raise UserError(
                f"{p.name} does not hold VGG16 weights with the fully connected layers, which the vgg-fc head "
                "needs; use the small-fc or gap head with it, or a full VGG16 weights file."
            ) from None
    # A full VGG16 file also serves a headless backbone: its convolution weights do not depend on the size.
    try:
        full = _vgg16(True, None, 224)
        _load_weights_quietly(full, p)
    except Exception:
        raise UserError(f"{p.name} does not hold VGG16 weights (its layers do not match VGG16).") from None
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    return backbone


def backbone(config: TrainConfig) -> keras.Model:
    include_top = vgg16.needs_top(config.head)
    if config.weights == "imagenet":
        return _vgg16(include_top, fetch_imagenet(include_top), config.image_size)
    if config.weights in ("none", "", None):
        return _vgg16(include_top, None, config.image_size)
    return _file_backbone(include_top, config.weights, config.image_size)


# ---------------------------------------------------------------------------------------------- model


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """VGG16 with a new head for ``num_classes``, frozen as ``config.unfreeze`` says (not compiled).

    Raises:
        UserError: options out of range, or a weights file that does not fit.
        core.model.vgg16.OfflineWeights (a UserError): the ImageNet weights are not cached and cannot be downloaded.
    """
    config.validate()
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2. Received: num_classes={num_classes}")
    precision = resolve_precision(config.precision)
    if config.weights == "imagenet":
        fetch_imagenet(vgg16.needs_top(config.head))  # download before taking the lock other sessions' builds wait on
    with dtype_policy(precision):
        base = backbone(config)
        inputs = keras.Input((config.image_size, config.image_size, 3), dtype="uint8", name="image")
        x = VGGPreprocess(name="vgg_preprocess")(inputs)
        for layer in base.layers[1:]:
            if layer.name == "predictions":  # vgg-fc: VGG16's 1000-way ImageNet layer is replaced below
                break
            x = layer(x)
        if config.head == "small-fc":
            # The tutorial's second option; its Dense(0.5) between the Dense layers is a typo for Dropout.
            x = layers.Flatten(name="flatten")(x)
            x = layers.Dense(256, activation="relu", name="head_dense1")(x)
            x = layers.Dropout(0.5, name="head_dropout1")(x)
            x = layers.Dense(256, activation="relu", name="head_dense2")(x)
            x = layers.Dropout(0.5, name="head_dropout2")(x)
        elif config.head == "gap":
            x = layers.GlobalAveragePooling2D(name="gap")(x)
            x = layers.Dropout(0.2, name="head_dropout")(x)
        # The softmax stays float32 under mixed precision: probabilities must sum to 1 and log() must not underflow.
        outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
        model = keras.Model(inputs, outputs, name=f"vgg16_{config.head.replace('-', '_')}")
    freeze(model, config.unfreeze)
    return model


def freeze(model: keras.Model, unfreeze: int) -> None:
    """Freeze every layer except the last ``unfreeze`` of ``model.layers``."""
    for layer, trainable in zip(model.layers, unfrozen_mask(len(model.layers), unfreeze), strict=True):
        layer.trainable = trainable


def fold_temperature(model: keras.Model, temperature: float) -> None:
    """Divide the last layer's logits by ``temperature`` for good: its kernel and bias, since softmax((Wx + b) / T)
    is softmax((W / T) x + b / T). The saved model then gives calibrated probabilities everywhere
    (core.model.calibration).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive. Received: temperature={temperature}")
    layer = model.get_layer("predictions")
    layer.kernel.assign(ops.divide(layer.kernel, temperature))
    layer.bias.assign(ops.divide(layer.bias, temperature))


def as_float32(model: keras.Model) -> keras.Model:
    """The same model computing in float32: a mixed-precision (bfloat16) model is rebuilt, its weights copied.

    Prediction, evaluation and every export use float32, so that the app and an exported file agree to 1e-5;
    mixed precision speeds up training, whose weights are float32 variables anyway.
    """
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model.layers):
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def describe_layers(model: keras.Model) -> list[dict]:
    """One row per layer: name, type, output shape, parameter count, trainable."""
    rows = []
    for layer in model.layers:
        shape = tuple(layer.output.shape) if hasattr(layer, "output") else ()
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": "x".join("?" if d is None else str(d) for d in shape[1:]),
                "params": int(layer.count_params()) if layer.weights else 0,
                "trainable": bool(layer.trainable and layer.weights),
            }
        )
    return rows


def param_counts(model: keras.Model) -> dict[str, int]:
    def count(weights) -> int:
        return int(sum(int(ops.size(w)) for w in weights))

    return {"trainable": count(model.trainable_weights), "frozen": count(model.non_trainable_weights)}


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimizer named in the config; Keras 2's ``decay`` is reproduced as lr / (1 + decay * step)."""
    lr = config.learning_rate
    if config.decay > 0:
        lr = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=config.decay)
    opt = config.optimizer
    if opt == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=config.nesterov)
    if opt == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    classes = {
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
        "adadelta": keras.optimizers.Adadelta,
        "adam": keras.optimizers.Adam,
    }
    return classes[opt](lr)


def compile_model(model: keras.Model, config: TrainConfig) -> keras.Model:
    # Re-compiling after changing `trainable` is what makes the change take effect in Keras.
    model.compile(
        optimizer=make_optimizer(config),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,  # XLA compilation costs more than it saves on a CPU for these few steps
    )
    return model
