"""Centre crop / pad / stretch and resize: the one implementation, in TensorFlow ops, used by the app and exports.

    square_image(pixels, 224, "crop")       # numpy (H, W, 3) uint8 -> (224, 224, 3) uint8, as training sees it
    square(tensor, 224, "pad")              # the same ops on a tensor, (H, W, 3) or (N, H, W, 3): inside a graph

Training, prediction, evaluation and explanation call ``square_image`` (through ``core.images.load_image``);
an exported SavedModel runs ``square`` inside its own graph. Both are the same TensorFlow kernels on the same
pixels, so the app and an export see the same uint8 input to the model, bit for bit. ``decode`` is the
SavedModel's decoder of encoded bytes, written to follow the app's Pillow decoder as closely as TensorFlow allows
(see ``core.images.preprocessing_spec`` for the steps, and the parity report for what still differs).
"""

from __future__ import annotations

import threading

from core import backend  # noqa: F401  (quiet TensorFlow import)

# isort: split
import numpy as np
import tensorflow as tf

from core.images import _PAD_COLOR, RESIZE_MODES

_fns: dict[tuple[int, str], tf.types.experimental.ConcreteFunction] = {}
_fns_lock = threading.Lock()


def _resize(x: tf.Tensor, height, width) -> tf.Tensor:
    # Antialiased bilinear: a triangle filter as wide as the scale, like Pillow's BILINEAR, so a large photo is
    # averaged down rather than sampled (no aliasing); upscaling is plain bilinear with half-pixel centres.
    return tf.image.resize(x, tf.stack([height, width]), method="bilinear", antialias=True)


def square(pixels: tf.Tensor, size: int, resize: str = "crop") -> tf.Tensor:
    """``size`` x ``size`` uint8 RGB from uint8 RGB of any size: one image (H, W, 3) or a batch (N, H, W, 3)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}. Received: resize={resize!r}")
    x = tf.cast(pixels, tf.float32)
    shape = tf.shape(x)
    h, w = shape[-3], shape[-2]
    if resize == "crop":
        side = tf.minimum(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = _resize(x[..., top : top + side, left : left + side, :], size, size)
    elif resize == "stretch":
        x = _resize(x, size, size)
    else:  # pad: the longer side becomes size, the shorter is rounded half up (integer maths: exact everywhere)
        longer = tf.maximum(h, w)
        new_h = tf.maximum(1, (2 * h * size + longer) // (2 * longer))
        new_w = tf.maximum(1, (2 * w * size + longer) // (2 * longer))
        mean = tf.constant(_PAD_COLOR, tf.float32)
        x = _resize(x, new_h, new_w) - mean  # padding with zeros then adding the mean back pads with the mean
        top, left = (size - new_h) // 2, (size - new_w) // 2
        pads = [[top, size - new_h - top], [left, size - new_w - left], [0, 0]]
        x = tf.pad(x, [[0, 0]] * (x.shape.rank - 3) + pads) + mean
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)  # round half to even, as everywhere


def _square_fn(size: int, resize: str):
    with _fns_lock:
        fn = _fns.get((size, resize))
        if fn is None:
            spec = tf.TensorSpec([None, None, 3], tf.uint8)
            fn = _fns[(size, resize)] = tf.function(lambda p: square(p, size, resize)).get_concrete_function(spec)
        return fn


def square_image(pixels: np.ndarray, size: int, resize: str = "crop") -> np.ndarray:
    """``square`` for one decoded image held in numpy: (H, W, 3) uint8 in, (size, size, 3) uint8 out."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}. Received: resize={resize!r}")
    return _square_fn(size, resize)(tf.convert_to_tensor(pixels, tf.uint8)).numpy()


# ---------------------------------------------------------------------------------------------- decoding bytes

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _decode_jpeg(data: tf.Tensor, size: int) -> tf.Tensor:
    # Pillow's draft mode, as the app decodes: libjpeg's DCT scaling by the largest of 8, 4, 2 that keeps both
    # sides >= size. TensorFlow's ratio is an attribute, not a tensor, hence one branch per ratio. The accurate
    # integer DCT is Pillow's (TensorFlow's default, the fast one, is up to 20 levels off on real photos).
    shape = tf.image.extract_jpeg_shape(data)
    scale = tf.minimum(shape[0] // size, shape[1] // size)
    branch = tf.where(scale >= 8, 3, tf.where(scale >= 4, 2, tf.where(scale >= 2, 1, 0)))

    def at(ratio: int):
        return lambda: tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")

    return tf.switch_case(branch, [at(r) for r in (1, 2, 4, 8)])


def _decode_png(data: tf.Tensor) -> tf.Tensor:
    # 16 bits read as such and brought to 8 by x / 257 rounded (8-bit files come back as x * 257: unchanged);
    # transparency composited over white, as the app does.
    rgba = tf.cast(tf.io.decode_png(data, channels=4, dtype=tf.uint16), tf.float32) / 257.0
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return tf.cast(tf.clip_by_value(tf.round(rgb), 0.0, 255.0), tf.uint8)


def decode(data: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded JPEG, PNG, GIF (first frame) or BMP bytes -> (H, W, 3) uint8 RGB, inside a graph.

    Differs from the app's Pillow decoder in what TensorFlow cannot do: EXIF orientation is not applied, and
    WebP and TIFF are not read.
    """
    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)
    return tf.case(
        [
            (tf.io.is_jpeg(data), lambda: _decode_jpeg(data, size)),
            (is_png, lambda: _decode_png(data)),
        ],
        default=lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        exclusive=False,
    )
