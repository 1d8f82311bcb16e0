"""Centre crop / pad / stretch and resize: the one implementation, in TensorFlow ops, used by the app and exports.

    square_image(pixels, 224, "crop")       # numpy (H, W, 3) uint8 -> (224, 224, 3) uint8, as training sees it
    square(tensor, 224, "pad")              # the same ops on a tensor, (H, W, 3) or (N, H, W, 3): inside a graph

Training, prediction, evaluation and explanation call ``square_image`` (through ``core.model.inputs.load_image``);
an exported SavedModel runs ``square`` inside its own graph. Both are the same TensorFlow kernels on the same
pixels, so the app and an export see the same uint8 input to the model, bit for bit. ``decode`` is the
SavedModel's decoder of encoded bytes, written to follow the app's Pillow decoder as closely as TensorFlow allows
(see ``core.imaging.spec.preprocessing_spec`` for the steps, and the parity report for what still differs).
"""

from __future__ import annotations

import threading

from core.model import backend  # noqa: F401  (quiet TensorFlow import)

# isort: split
import numpy as np
import tensorflow as tf

from core.imaging.spec import PAD_COLOR, RESIZE_MODES

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
        mean = tf.constant(PAD_COLOR, tf.float32)
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


def _read(data: tf.Tensor, pos: tf.Tensor, n: int, little: tf.Tensor | bool = False) -> tf.Tensor:
    """The unsigned integer of ``n`` bytes at ``pos`` (0 past the end: a damaged header reads as nothing)."""
    end = tf.cast(tf.strings.length(data), tf.int64)
    raw = tf.strings.substr(data, tf.clip_by_value(pos, 0, end), n)
    b = tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.int64)
    b = tf.pad(b, [[0, n - tf.size(b, tf.int32)]])
    big = tf.reduce_sum(b * (256 ** tf.range(n - 1, -1, -1, dtype=tf.int64)))
    return tf.where(little, tf.reduce_sum(b * (256 ** tf.range(n, dtype=tf.int64))), big)


def exif_orientation(data: tf.Tensor) -> tf.Tensor:
    """A JPEG's EXIF orientation (1-8; 1 when it has none), read from its APP1 segment inside a graph."""
    end = tf.cast(tf.strings.length(data), tf.int64)

    def more(pos, found, i):
        return (found == -1) & (i < 64) & (pos + 4 <= end)

    def segment(pos, found, i):  # walk the segments after SOI until the Exif one, the image data, or garbage
        marker, length = _read(data, pos, 2), _read(data, pos + 2, 2)
        exif = (marker == 0xFFE1) & tf.equal(tf.strings.substr(data, tf.minimum(pos + 4, end), 6), b"Exif\0\0")
        stop = (marker == 0xFFDA) | (marker == 0xFFD9) | (marker // 256 != 0xFF) | (length < 2)
        found = tf.where(exif, pos, tf.where(stop, tf.constant(-2, tf.int64), found))
        return pos + 2 + length, found, i + 1

    _, found, _ = tf.while_loop(more, segment, [tf.constant(2, tf.int64), tf.constant(-1, tf.int64), 0])

    def from_tiff():
        base = found + 10  # after the marker, the length and "Exif\0\0": a TIFF header, then IFD0's entries
        little = tf.equal(tf.strings.substr(data, tf.minimum(base, end), 2), b"II")
        ifd = base + _read(data, base + 4, 4, little)
        count = tf.minimum(_read(data, ifd, 2, little), 512)
        raw = tf.strings.substr(data, tf.clip_by_value(ifd + 2, 0, end), 12 * count)
        entries = tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.int64)
        entries = tf.reshape(entries[: tf.size(entries) // 12 * 12], [-1, 12])  # tag, type, count, value

        def u16(col):
            hi, lo = entries[:, col], entries[:, col + 1]
            return tf.where(little, lo * 256 + hi, hi * 256 + lo)

        values = tf.boolean_mask(u16(8), tf.equal(u16(0), 0x0112))
        value = tf.cond(tf.size(values) > 0, lambda: values[0], lambda: tf.constant(1, tf.int64))
        return tf.where((value >= 1) & (value <= 8), value, 1)

    return tf.cond(found >= 0, from_tiff, lambda: tf.constant(1, tf.int64))


def _upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    # Pillow's ImageOps.exif_transpose, orientation by orientation (tf.image.rot90 turns counter-clockwise).
    def transpose():
        return tf.transpose(image, [1, 0, 2])

    return tf.switch_case(
        tf.cast(orientation - 1, tf.int32),
        [
            lambda: image,
            lambda: image[:, ::-1],
            lambda: tf.image.rot90(image, 2),
            lambda: image[::-1],
            transpose,
            lambda: tf.image.rot90(image, 3),
            lambda: tf.image.rot90(transpose(), 2),
            lambda: tf.image.rot90(image, 1),
        ],
    )


def decode(data: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded JPEG, PNG, GIF (first frame) or BMP bytes -> (H, W, 3) uint8 RGB, inside a graph, as the app decodes.

    JPEGs are turned upright by their EXIF orientation, as Pillow's ``exif_transpose`` does in the app. What
    TensorFlow cannot read: WebP and TIFF.
    """
    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)
    return tf.case(
        [
            (tf.io.is_jpeg(data), lambda: _upright(_decode_jpeg(data, size), exif_orientation(data))),
            (is_png, lambda: _decode_png(data)),
        ],
        default=lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        exclusive=False,
    )
