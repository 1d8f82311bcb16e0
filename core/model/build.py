"""Transfer-learning model: a backbone from ``keras.applications`` (``core.model.backbones``), a new head,
freezing, compiling.

    model = build_model(TrainConfig(weights="none", image_size=64), num_classes=3)
    describe_layers(model)        # rows for a layer table
    param_counts(model)           # {"trainable": ..., "frozen": ...}

The model is flat (input, preprocessing, the backbone's own layers, head), so "unfreeze the last K layers" counts
layers exactly as the tutorial counts ``model.layers``, and the frozen prefix can be cut off as a unit.
It takes uint8 RGB images; the first layers do the backbone's own normalisation, so a saved model needs nothing
else. What can be known without TensorFlow (the layer and block tables, the ImageNet weights' address and cache)
is in ``core.model.vgg16`` and ``core.model.backbones``; this module builds the real thing.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
from keras import layers, ops

from core.config import HEAD_LAYERS, TrainConfig
from core.model import backbones, fused, vgg16
from core.model.vgg16 import unfrozen_mask
from core.model.weights import _vgg16, application, backbone, fetch_imagenet, fetch_weights  # noqa: F401
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


@keras.saving.register_keras_serializable(package="core")
class PixelsToFloat(layers.Layer):
    """uint8 RGB -> float32 RGB, for backbones whose own first layers normalise (``include_preprocessing``)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        return ops.cast(inputs, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="core")
class ErfGelu(layers.Layer):
    """GELU written with erf, 0.5 x (1 + erf(x / sqrt 2)): the same function as Keras' exact gelu, which TensorFlow
    computes with erfc, an operation ONNX converters lack."""

    def call(self, inputs):
        return 0.5 * inputs * (1.0 + ops.erf(inputs * 0.7071067811865476))

    def compute_output_shape(self, input_shape):
        return input_shape


def portable(model: keras.Model) -> keras.Model:
    """The same model in operations every runtime has: a convolution with one group per channel (ConvNeXt's) becomes
    the DepthwiseConv2D it is (TensorFlow runs grouped convolutions as a compiled XLA function, which neither LiteRT
    nor ONNX can take in), and exact GELU uses erf. Weights carry over unchanged in value."""
    grouped = [x for x in model.layers if isinstance(x, layers.Conv2D) and x.groups > 1 and x.groups == x.filters]
    gelus = [x for x in model.layers if isinstance(x, layers.Activation) and x.get_config()["activation"] == "gelu"]
    if not grouped and not gelus:
        return model

    def clone(layer):
        config = layer.get_config() if isinstance(layer, layers.Layer) else None
        if layer in grouped:
            keep = ("name", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "use_bias", "dtype")
            return layers.DepthwiseConv2D(**{k: config[k] for k in keep}, depth_multiplier=1)
        if layer in gelus:
            return ErfGelu(name=config["name"], dtype=config["dtype"])
        return layer.__class__.from_config(config if config is not None else layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, copy.layers, strict=True):
        weights = old.get_weights()
        if old in grouped:  # (h, w, 1, channels) as a grouped kernel is (h, w, channels, 1) as a depthwise one
            weights = [weights[0].transpose(0, 1, 3, 2), *weights[1:]]
        new.set_weights(weights)
    copy.trainable = model.trainable
    return copy


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


# ---------------------------------------------------------------------------------------------- model


def _head(x, head: str, num_classes: int):
    if head == "small-fc":
        # The tutorial's second option; its Dense(0.5) between the Dense layers is a typo for Dropout.
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(256, activation="relu", name="head_dense1")(x)
        x = layers.Dropout(0.5, name="head_dropout1")(x)
        x = layers.Dense(256, activation="relu", name="head_dense2")(x)
        x = layers.Dropout(0.5, name="head_dropout2")(x)
    elif head == "gap":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        x = layers.Dropout(0.2, name="head_dropout")(x)
    # The softmax stays float32 under mixed precision: probabilities must sum to 1 and log() must not underflow.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


def _other_backbone(config: TrainConfig, num_classes: int) -> keras.Model:
    """A backbone other than VGG16: uint8 input, its preprocessing, the application built on it, the head."""
    entry = backbones.get(config.backbone)
    weights = None if config.weights in ("none", "", None) else config.weights
    if weights == "imagenet":
        weights = fetch_weights(entry)
    inputs = keras.Input((config.image_size, config.image_size, 3), dtype="uint8", name="image")
    pre = VGGPreprocess(name="caffe_preprocess") if entry.preprocessing == "caffe" else PixelsToFloat(name="to_float")
    base = application(entry, weights, pre(inputs))
    for layer in base.layers:
        # Stochastic depth (EfficientNetV2's per-block Dropout) regularises training from scratch; here most blocks
        # stay frozen and compute once, which a random drop would forbid, so it is off, as with the Keras guide's
        # base called with training=False.
        if isinstance(layer, layers.Dropout):
            layer.rate = 0.0
    outputs = _head(base.output, config.head, num_classes)
    return portable(keras.Model(inputs, outputs, name=f"{entry.name}_{config.head.replace('-', '_')}"))


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """VGG16 with a new head for ``num_classes``, frozen as ``config.unfreeze`` says (not compiled).

    Raises:
        UserError: options out of range, or a weights file that does not fit.
        core.model.vgg16.OfflineWeights (a UserError): the ImageNet weights are not cached and cannot be downloaded.
    """
    config.validate()
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2. Received: num_classes={num_classes}")
    blocks = config.unfreeze_blocks if config.backbone != "vgg16" else 0
    if blocks and blocks > (most := backbones.block_count(config.backbone)):
        raise UserError(f"{config.backbone} has {most} blocks; --unfreeze-blocks can be at most {most}.")
    precision = resolve_precision(config.precision)
    if config.weights == "imagenet":  # download before taking the lock other sessions' builds wait on
        entry = backbones.get(config.backbone)
        fetch_imagenet(vgg16.needs_top(config.head)) if entry.name == "vgg16" else fetch_weights(entry)
    if config.backbone != "vgg16":
        with dtype_policy(precision):
            model = _other_backbone(config, num_classes)
        freeze(model, HEAD_LAYERS[config.head], config.unfreeze_blocks)
        return model
    with dtype_policy(precision):
        base = backbone(config)
        inputs = keras.Input((config.image_size, config.image_size, 3), dtype="uint8", name="image")
        x = VGGPreprocess(name="vgg_preprocess")(inputs)
        for layer in base.layers[1:]:
            if layer.name == "predictions":  # vgg-fc: VGG16's 1000-way ImageNet layer is replaced below
                break
            x = layer(x)
        outputs = _head(x, config.head, num_classes)
        model = keras.Model(inputs, outputs, name=f"vgg16_{config.head.replace('-', '_')}")
    freeze(model, config.unfreeze)
    return model


def freeze(model: keras.Model, unfreeze: int, blocks: int = 0) -> None:
    """Freeze every layer except the last ``unfreeze`` of ``model.layers`` and, on a backbone other than VGG16, the
    layers of its last ``blocks`` blocks (``core.model.backbones``) except batch normalisation, which stays frozen."""
    mask = unfrozen_mask(len(model.layers), unfreeze)
    entry = backbones.of_model(model.name)
    if entry.name != "vgg16" and blocks > 0:
        own = backbone_layers(model)
        wanted = set(backbones.unfrozen_blocks(entry.name, blocks))
        names = backbones.assign_blocks(entry, [layer.name for layer in own])
        trains = {id(layer) for layer, block in zip(own, names, strict=True) if block in wanted}
        mask = [m or (id(layer) in trains and not isinstance(layer, layers.BatchNormalization))
                for m, layer in zip(mask, model.layers, strict=True)]  # fmt: skip
    for layer, trainable in zip(model.layers, mask, strict=True):
        layer.trainable = trainable


def backbone_layers(model: keras.Model) -> list:
    """The backbone's own layers of a model on a backbone other than VGG16: after the input and preprocessing
    layers, before the head's."""
    entry = backbones.of_model(model.name)
    head = model.name[len(entry.name) + 1 :].replace("_", "-")
    return list(model.layers[2 : len(model.layers) - HEAD_LAYERS[head]])


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
    return _recast(model, lambda layer: "float32")


def as_bfloat16(model: keras.Model) -> keras.Model:
    """The same model computing in mixed bfloat16 (float32 weights, bfloat16 arithmetic), its weights copied; the
    layers that stay float32 under mixed precision (the softmax, the preprocessing) stay so. For answering where
    bfloat16 cannot change the answer (``core.model.predict``)."""
    return _recast(model, lambda layer: "float32" if layer.name == "predictions" else "mixed_bfloat16")


def _recast(model: keras.Model, dtype) -> keras.Model:
    def clone(layer):
        if not isinstance(layer, layers.Layer):  # an operation in the graph (MobileNetV3's x + 3): no dtype of its own
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype(layer)})

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
    # SGD and Adam(W) update each weight in one fused op (core.model.fused): the same numbers, a third of the time.
    if opt == "sgd":
        return fused.FusedSGD(lr, momentum=config.momentum, nesterov=config.nesterov)
    if opt == "adamw":
        return fused.FusedAdamW(lr, weight_decay=config.weight_decay)
    classes = {
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
        "adadelta": keras.optimizers.Adadelta,
        "adam": fused.FusedAdam,
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
