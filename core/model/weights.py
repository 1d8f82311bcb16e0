"""Backbones' weights: ImageNet files fetched once into Keras' cache (checked, never hanging), local .h5 files
loaded into the known topology, and the ``keras.applications`` constructors called on the app's own graph.

    path = fetch_imagenet(include_top=False)           # VGG16's file; OfflineWeights when it cannot be had
    base = application(backbones.get("resnet50"), None, tensor)  # random weights, built on ``tensor``

``core.model.build`` builds the classifier from these; ``core.model.vgg16`` and ``core.model.backbones`` say where
the files are and whether they can be downloaded, without TensorFlow.
"""

from __future__ import annotations

import contextlib
import socket
import warnings
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras

from core.config import TrainConfig
from core.model import backbones, vgg16
from core.util.errors import UserError


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


def fetch_weights(entry: backbones.Backbone) -> str:
    """Path of a backbone's ImageNet weights file (no top) in Keras' cache, downloaded once (checked, never hanging).

    Raises:
        OfflineWeights: not cached, and the download server cannot be reached.
    """
    if entry.name == "vgg16":
        return fetch_imagenet(False)
    backbones.check_weights(entry.name, "gap")
    path = backbones.weights_cache_path(entry.name)
    home = vgg16.weights_home()
    with contextlib.suppress(OSError):
        home.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        return keras.utils.get_file(
            path.name, entry.weights_url, cache_subdir="models", cache_dir=str(home), file_hash=entry.weights_hash
        )
    except Exception as exc:
        if "URL fetch failure" in str(exc) or isinstance(exc, OSError):
            raise backbones.offline_error(entry.name) from None
        raise
    finally:
        socket.setdefaulttimeout(previous)


def application(entry: backbones.Backbone, weights: str | None, tensor) -> keras.Model:
    """The backbone built on ``tensor`` (so its layers join the caller's graph), without its top."""
    make = getattr(keras.applications, entry.application)
    if weights in (None, "imagenet"):
        return make(include_top=False, weights=weights, input_tensor=tensor, **entry.options)
    p = Path(weights)
    if not p.is_file():
        raise UserError(f"The weights file {weights} does not exist; use 'imagenet', 'none' or an existing .h5 file.")
    if not p.name.endswith(".h5"):
        raise UserError(f"{p.name} is not a weights file: {entry.title} weights come as an .h5 file.")
    base = make(include_top=False, weights=None, input_tensor=tensor, **entry.options)
    try:
        _load_weights_quietly(base, p)
    except Exception:
        raise UserError(
            f"{p.name} does not hold {entry.title} weights without the top layers (its layers do not match)."
        ) from None
    return base


def backbone(config: TrainConfig) -> keras.Model:
    include_top = vgg16.needs_top(config.head)
    if config.weights == "imagenet":
        return _vgg16(include_top, fetch_imagenet(include_top), config.image_size)
    if config.weights in ("none", "", None):
        return _vgg16(include_top, None, config.image_size)
    return _file_backbone(include_top, config.weights, config.image_size)
