"""Grad-CAM: which part of an image made the model choose a class.

    run = load_run("runs/ants")
    e = explain(run, "photo.jpg", class_name=None, top_k=3)   # None: explain the top class
    e.heatmap      # (size, size) float32 in [0, 1]: 1 where the evidence for e.class_name is strongest
    e.overlay      # (size, size, 3) uint8: the heat map in colour over the image the model saw
    e.top          # [(class, probability), ...] most likely first, as core.model.predict gives them

    heat = gradcam(model, image_uint8, class_index=1, layer="block5_conv3")
    save_overlays(run, ["a.jpg", "b.png"], "out/")             # one PNG per image, for the CLI

The method is the Keras example ``examples/vision/grad_cam.py`` (Selvaraju et al., 2017): the gradient of the
class score with respect to a convolution layer's output, averaged over space, weights that layer's channels;
their weighted sum, clipped at zero and scaled to [0, 1], is the map. The class score is taken before the
softmax, as in the paper and the example: a confident softmax has almost no gradient left.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras
import numpy as np
from PIL import Image

from core.imaging.pillow import Source
from core.model.inputs import load_image
from core.model.predict import Run
from core.util.errors import UserError

DEFAULT_LAYER = "block5_conv3"
# From random weights, a short training on a few photos leaves the last block's filters with little meaning of
# their own; the third block's last convolution still holds edges and blobs at a finer grid.
RANDOM_WEIGHTS_LAYER = "block3_conv3"
# Per model, per layer: the compiled Grad-CAM step, so explaining many images builds and traces it once.
_cam_functions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Explanation:
    class_name: str  # the class the heat map explains
    heatmap: np.ndarray  # (size, size) float32 in [0, 1]
    overlay: np.ndarray  # (size, size, 3) uint8
    image: np.ndarray  # (size, size, 3) uint8: the image as the model saw it (cropped, padded or stretched)
    top: list[tuple[str, float]]  # (class, probability), most likely first


# ---------------------------------------------------------------------------------------------- Grad-CAM


def spatial_layers(model: keras.Model) -> list[str]:
    """Names of the layers a heat map can be taken from: the ones with a (height, width, channels) output."""
    # Shapes are worked out along the chain rather than read from ``layer.output``, which for VGG16's layers is
    # the keras.applications graph's tensor (see ``_cam_function``).
    if not _chain(model):  # a graph (residual blocks): each layer has one output, in this model's own graph
        return [x.name for x in model.layers[1:] if len(getattr(x, "output", None).shape or ()) == 4]
    shape, names = tuple(model.inputs[0].shape), []
    for layer in model.layers[1:]:
        shape = tuple(layer.compute_output_shape(shape))
        if len(shape) == 4:
            names.append(layer.name)
    return names


def _chain(model: keras.Model) -> bool:
    """VGG16 models are a chain of layers; the other backbones are graphs (``core.model.backbones``)."""
    return model.name.startswith("vgg16")


def convolution_layers(run_or_model: Run | keras.Model) -> list[str]:
    """Names of the model's convolution layers, first to last: the usual choices for a heat map."""
    model = run_or_model.model if isinstance(run_or_model, Run) else run_or_model
    return [n for n in spatial_layers(model) if isinstance(model.get_layer(n), keras.layers.Conv2D)]


def default_layer(run: Run) -> str:
    """The layer a heat map of ``run`` is taken from unless the user picks one.

    The last convolution (``DEFAULT_LAYER``), except for a run trained from random weights (``weights="none"``):
    there ``RANDOM_WEIGHTS_LAYER``.
    """
    layer = RANDOM_WEIGHTS_LAYER if run.config.weights == "none" else DEFAULT_LAYER
    layers = convolution_layers(run)
    return layer if layer in layers or not layers else layers[-1]


def _check_layer(model: keras.Model, layer: str) -> None:
    valid = spatial_layers(model)
    if layer in valid:
        return
    convs = [n for n in valid if isinstance(model.get_layer(n), keras.layers.Conv2D)]
    examples = ", ".join(convs[-3:][::-1] or valid[-3:])
    if layer in {x.name for x in model.layers}:
        problem = f"The layer {layer!r} has no image-shaped output to explain"
    else:
        problem = f"The model has no layer named {layer!r}"
    raise UserError(f"{problem}; choose a convolution layer such as {examples}.")


def _cam_function(model: keras.Model, layer: str):
    """A compiled ``cam(images, index) -> (batch, h, w)`` maps before scaling, for ``layer`` of ``model``.

    A model from the image to (``layer``'s output, the class scores' input) is built by calling the model's own
    layers again on a new input: the model is a chain, so this rebuilds it with shared weights. Taking
    ``layer.output`` instead would not work: VGG16's layers also belong to the ``keras.applications`` graph, and
    their ``output`` is that graph's tensor, not this model's.
    A softmax Dense at the end is left out and its kernel and bias applied here, giving the scores before the
    softmax without changing the shared model (it may be cached and in use by another session).
    """
    per_model = _cam_functions.setdefault(model, {})
    if layer in per_model:
        return per_model[layer]
    import tensorflow as tf

    last = model.layers[-1]
    scoring = last if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax else None
    if _chain(model):
        inputs = keras.Input(tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype, name="image")
        x, target = inputs, None
        for each in model.layers[1 : -1 if scoring else None]:
            x = each(x)
            if each.name == layer:
                target = x
        grad_model = keras.Model(inputs, [target, x], name=f"gradcam_{layer}")
    else:  # a graph: its layers have one node each, in this model's graph, so their tensors can be taken
        end = last.input if scoring else model.outputs[0]
        grad_model = keras.Model(model.inputs[0], [model.get_layer(layer).output, end], name=f"gradcam_{layer}")

    @tf.function(reduce_retracing=True, autograph=False)
    def cam(images, index):
        with tf.GradientTape() as tape:
            conv, features = grad_model(images, training=False)
            if scoring is None:
                scores = tf.cast(features, tf.float32)
            else:
                scores = tf.matmul(tf.cast(features, scoring.kernel.dtype), scoring.kernel)
                scores = tf.cast(scores + scoring.bias if scoring.use_bias else scores, tf.float32)
            chosen = tf.where(index < 0, tf.argmax(scores, axis=-1, output_type=tf.int32), index)
            score = tf.gather(scores, chosen, axis=1, batch_dims=1)
        grads = tf.cast(tape.gradient(score, conv), tf.float32)
        # One weight per channel: how much the class score rises, on average over the map, as the channel rises.
        weights = tf.reduce_mean(grads, axis=(1, 2))
        return tf.nn.relu(tf.einsum("bhwc,bc->bhw", tf.cast(conv, tf.float32), weights))

    per_model[layer] = cam
    return cam


def gradcam(
    run_or_model: Run | keras.Model,
    image_uint8: np.ndarray,
    class_index: int | None = None,
    layer: str = DEFAULT_LAYER,
) -> np.ndarray:
    """Grad-CAM heat map of one image for one class, upsampled to the image's size.

    Args:
        run_or_model: a loaded run (``core.model.predict.load_run``) or a model built by
        ``core.model.build.build_model``.
        image_uint8: one ``(size, size, 3)`` uint8 RGB image of the model's input size
        (``core.model.inputs.load_image``).
        class_index: the class to explain; None explains the class the model ranks first.
        layer: the layer whose output the map is made from; the last convolution keeps the most meaning.

    Returns:
        ``(size, size)`` float32 in [0, 1]; all zeros when nothing in the image speaks for the class.

    Raises:
        UserError: ``layer`` is not a layer of the model with an image-shaped output.
    """
    model = run_or_model.model if isinstance(run_or_model, Run) else run_or_model
    image = np.asarray(image_uint8)
    expected = tuple(model.inputs[0].shape[1:])
    if image.shape != expected:
        raise ValueError(f"image_uint8 must have the model's input shape {expected}. Received: shape={image.shape}")
    n_classes = int(model.outputs[0].shape[-1])
    if class_index is not None and not 0 <= class_index < n_classes:
        raise ValueError(f"class_index must be in [0, {n_classes}). Received: class_index={class_index}")
    _check_layer(model, layer)
    index = np.array([-1 if class_index is None else class_index], dtype=np.int32)
    cam = np.asarray(_cam_function(model, layer)(image[None], index)[0], dtype=np.float32)
    h, w = image.shape[:2]
    # Scaled after upsampling, so the hottest pixel of the map itself is 1 (bilinear samples fall between cells).
    heat = np.asarray(Image.fromarray(cam).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    peak = float(heat.max())
    return np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros((h, w), np.float32)


# ---------------------------------------------------------------------------------------------- colour


# A jet-like colour map: dark blue (cold) through cyan, yellow to dark red (hot), piecewise linear.
_JET_STOPS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_JET_RGB = np.array(
    [[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 0, 0]],
    dtype=np.float32,
)


def colormap(heatmap: np.ndarray) -> np.ndarray:
    """``(h, w)`` values in [0, 1] -> ``(h, w, 3)`` uint8 RGB, blue for 0 to red for 1."""
    v = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    rgb = np.stack([np.interp(v, _JET_STOPS, _JET_RGB[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


def overlay(image_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The heat map in colour over the image: ``(1 - alpha) * image + alpha * colours``, RGB uint8."""
    image = np.asarray(image_uint8)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != np.shape(heatmap):
        raise ValueError(
            f"image_uint8 must be (h, w, 3) and heatmap (h, w). Received: {image.shape} and {np.shape(heatmap)}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha}")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colormap(heatmap).astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- runs


def class_position(run: Run, class_name: str | None) -> int | None:
    """The output index of ``class_name`` in the run (None stays None: the top class)."""
    if class_name is None:
        return None
    if class_name not in run.classes:
        shown = ", ".join(run.classes[:10]) + (", ..." if len(run.classes) > 10 else "")
        raise UserError(f"The run has no class {class_name!r}; its classes are {shown}.")
    return run.classes.index(class_name)


def explain(
    run: Run, source: Source, class_name: str | None = None, top_k: int = 3, layer: str = DEFAULT_LAYER
) -> Explanation:
    """Decode one image as the run was trained (size, resize), classify it and explain one class.

    Raises:
        UserError: an unknown class or layer; ``core.imaging.pillow.ImageError`` (a UserError) for a file that is not
            a usable image.
    """
    wanted = class_position(run, class_name)
    image = load_image(source, run.config.image_size, run.config.resize)
    probs = run.probabilities(image[None])[0]
    order = np.argsort(probs)[::-1]
    index = int(order[0]) if wanted is None else wanted
    heat = gradcam(run, image, index, layer)
    k = max(1, min(top_k, len(run.classes)))
    return Explanation(
        class_name=run.classes[index],
        heatmap=heat,
        overlay=overlay(image, heat),
        image=image,
        top=[(run.classes[j], float(probs[j])) for j in order[:k]],
    )


def overlay_filename(name: str, n: int = 1) -> str:
    """The PNG file name for an image's overlay: one path component, never hidden, whatever ``name`` holds.

    The image's stem keeps its letters (any script), digits and ``._-``; anything else becomes ``_``.
    ``n`` > 1 numbers it apart from another image of the same name.
    """
    stem = re.sub(r"[^\w.-]+", "_", Path(str(name)).stem).strip("._-")[:80] or "image"
    return f"{stem}{f'-{n}' if n > 1 else ''}.gradcam.png"


def save_overlays(
    run: Run,
    sources: list[Source],
    out_dir: str | os.PathLike,
    class_name: str | None = None,
    names: list[str] | None = None,
) -> list[tuple[Explanation, Path]]:
    """Explain each image and write its overlay as a PNG into ``out_dir`` (created if missing).

    File names come from the images' names (``overlay_filename``), numbered when two would collide, and are
    always directly inside ``out_dir``; an overlay written there before under the same name is replaced.
    Raises ``UserError`` for an unknown class, a folder that cannot be made or written, or an image that
    cannot be read.
    """
    class_position(run, class_name)  # an unknown class fails before any file is written
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{out} is a file, not a folder; choose another folder for the explanations.") from None
    except OSError as exc:
        raise UserError(f"The folder {out} cannot be created ({exc.strerror or exc}).") from None
    root = out.resolve()
    names = names or [f"image {i + 1}" if isinstance(s, bytes) else str(s) for i, s in enumerate(sources)]
    used: set[str] = set()
    written = []
    for source, name in zip(sources, names, strict=True):
        e = explain(run, source, class_name)
        n = 1
        while overlay_filename(name, n) in used:
            n += 1
        filename = overlay_filename(name, n)
        used.add(filename)
        path = root / filename
        if path.parent != root:  # cannot happen with the name rules above; a guard, not a feature
            raise UserError(f"Refusing to write {filename} outside {root}.")
        _write_png(e.overlay, path)
        written.append((e, path))
    return written


def _write_png(rgb: np.ndarray, path: Path) -> None:
    # Written beside the target and renamed over it: a symlink already there under that name is replaced,
    # never followed out of the folder, and no reader sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(rgb).save(f, "PNG")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UserError(f"{path} cannot be written ({exc.strerror or exc}).") from None
