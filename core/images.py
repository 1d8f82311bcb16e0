"""Image decoding and resizing: the one preprocessing function used by training, prediction and export.

    arr = load_image("photo.jpg", size=224, resize="crop")     # (224, 224, 3) uint8, RGB: the model's input
    pic = thumbnail("photo.jpg", size=96)                        # the same look, Pillow only, for pages

Decoding is Pillow's; the crop/pad/stretch and resize are ``core.geometry``'s TensorFlow ops, the same ones an
exported model runs in its own graph.

Images stay uint8 until the model's first layer (``core.model.VGGPreprocess``) turns them into VGG16's
input (RGB->BGR minus the ImageNet mean), so a dataset in memory costs 150 KB per 224 px image, not 600 KB.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import UserError

# A decompression bomb is refused, not merely warned about: the warning threshold (about 89 Mpx) already
# means a gigabyte of RGB pixels once decoded.
warnings.simplefilter("error", Image.DecompressionBombWarning)
ImageFile.LOAD_TRUNCATED_IMAGES = False

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"}
MAX_PIXELS_ENV = "CLASSIFIER_MAX_PIXELS"
MAX_PIXELS = 40_000_000  # decoded RGB: 120 MB, and about four copies of it on the way to the model
_DRAFT_FORMATS = {"JPEG", "MPO"}  # decoded at 1/2, 1/4 or 1/8 scale by libjpeg when the model needs fewer pixels
# ImageNet mean in RGB order; padding with it gives zeros after VGG16's mean subtraction.
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
_PAD_COLOR = tuple(round(c) for c in IMAGENET_MEAN_RGB)
RESIZE_MODES = ("crop", "pad", "stretch")
_16BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

Source = str | os.PathLike | bytes


class ImageError(UserError):
    """An input file that is not a usable image; the message says why in a few words."""


def max_pixels() -> int:
    """The most pixels this server decodes from one image (``$CLASSIFIER_MAX_PIXELS``, default 40 million)."""
    try:
        return max(1, int(os.environ.get(MAX_PIXELS_ENV) or MAX_PIXELS))
    except ValueError:
        return MAX_PIXELS


def _too_many(width: int, height: int) -> ImageError:
    return ImageError(
        f"too many pixels ({width} x {height}, {width * height / 1e6:.3g} Mpx; this server decodes at most "
        f"{max_pixels() / 1e6:.3g} Mpx): make it smaller and try again"
    )


def open_image(source: Source) -> Image.Image:
    """Open and identify an image (header only), refusing formats and sizes we do not accept.

    Nothing is decoded yet: an image above ``max_pixels()`` is refused from its header. A JPEG may be larger (up to
    64 times), since it is decoded at a reduced scale (``decode`` checks the pixels it will really decode).
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        im = Image.open(fp)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError("too many pixels (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"unreadable image ({exc})") from None
    if im.format not in ALLOWED_FORMATS:
        im.close()
        raise ImageError(f"unsupported format ({im.format})")
    # Pillow only raises above twice the limit and merely warns in between; the "error" filter above is
    # process-wide state that warnings.catch_warnings() (pytest, other libraries) silently undoes, so check here.
    if Image.MAX_IMAGE_PIXELS and im.width * im.height > Image.MAX_IMAGE_PIXELS:
        im.close()
        raise ImageError("too many pixels (possible decompression bomb)")
    reduced = 64 if im.format in _DRAFT_FORMATS else 1
    if im.width * im.height > max_pixels() * reduced:
        im.close()
        raise _too_many(im.width, im.height)
    return im


def _draft(im: Image.Image, size: int) -> None:
    """Let a JPEG decode at the smallest scale that keeps both sides >= ``size``; refuse it if that is still
    more pixels than the server decodes."""
    im.draft("RGB", (size, size))  # only JPEG acts on it
    if im.width * im.height > max_pixels():
        raise _too_many(im.width, im.height)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode to RGB: transparency over white, 16-bit scaled down, CMYK and palettes converted."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in _16BIT_MODES:
        arr = np.asarray(im, dtype=np.int64)
        if im.mode != "I" or arr.max() > 255:  # 16-bit range, scale to 8 bits (rounded: 65534 is 255, not 254)
            arr = np.rint(arr / 257.0)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L").convert("RGB")
    # a tRNS colour key (PNG in P, L or RGB mode) is transparency too, not only an alpha band
    has_alpha = im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def square(im: Image.Image, size: int, resize: str = "crop") -> Image.Image:
    """Make an RGB image ``size`` x ``size``: centre ``crop``, ``pad`` with the mean colour, or ``stretch``."""
    if resize == "crop":
        return ImageOps.fit(im, (size, size), Image.Resampling.BILINEAR)
    if resize == "pad":
        return ImageOps.pad(im, (size, size), Image.Resampling.BILINEAR, color=_PAD_COLOR)
    if resize == "stretch":
        return im.resize((size, size), Image.Resampling.BILINEAR)
    raise ValueError(f"resize must be one of crop, pad, stretch. Received: resize={resize!r}")


def decode(source: Source, size: int) -> np.ndarray:
    """Decode one image file (path or bytes) into ``(H, W, 3)`` uint8 RGB, as the model's preprocessing starts.

    EXIF orientation is applied, animated images give their first frame, and large JPEGs decode at a
    reduced scale (Pillow's draft mode) when both sides stay at least ``size``: same picture, a fraction of the work.

    Raises:
        ImageError: the file is not an image we accept, is damaged or truncated, or has too many pixels.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels. Received: size={size!r}")
    with open_image(source) as im:
        try:
            _draft(im, size)
            im = ImageOps.exif_transpose(im)
            return np.asarray(to_rgb(im), dtype=np.uint8)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageError("too many pixels (possible decompression bomb)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            reason = "truncated or damaged image" if "truncated" in str(exc) or isinstance(exc, EOFError) else exc
            raise ImageError(f"{reason}") from None


def load_image(source: Source, size: int, resize: str = "crop") -> np.ndarray:
    """Decode one image file (path or bytes) into the model's ``(size, size, 3)`` uint8 RGB input.

    ``decode``, then ``core.geometry.square_image``: the crop/pad/stretch and resize that every export runs
    inside its own graph, so the app and an export see the same pixels.

    Raises:
        ImageError: the file is not an image we accept, is damaged or truncated, or has too many pixels.
    """
    # a caller's mistake, not a bad file: checked first so it cannot come out as an ImageError blaming the image
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}. Received: resize={resize!r}")
    pixels = decode(source, size)
    from core.geometry import square_image  # TensorFlow: imported by who feeds a model, never by a page's thumbnails

    return square_image(pixels, size, resize)


def thumbnail(source: Source, size: int, resize: str = "crop") -> np.ndarray:
    """A ``(size, size, 3)`` uint8 picture for display, made with Pillow alone (pages show these without TensorFlow).

    Looks as the model's input does; the model itself is fed by ``load_image``.
    """
    with open_image(source) as im:
        try:
            _draft(im, size)
            return np.asarray(square(to_rgb(ImageOps.exif_transpose(im)), size, resize), dtype=np.uint8)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageError("too many pixels (possible decompression bomb)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            reason = "truncated or damaged image" if "truncated" in str(exc) or isinstance(exc, EOFError) else exc
            raise ImageError(f"{reason}") from None


def load_named(source: Source, size: int, resize: str = "crop", name: str = "image") -> np.ndarray:
    """``load_image``, with the file's name (or ``name`` for bytes) at the start of an error message."""
    try:
        return load_image(source, size, resize)
    except ImageError as exc:
        label = name if isinstance(source, bytes) else Path(source).name
        raise ImageError(f"{label}: {exc}") from None


def load_images(
    sources: Sequence[Source],
    size: int,
    resize: str = "crop",
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Decode many images in parallel threads (Pillow releases the GIL) into one ``(n, size, size, 3)`` uint8 array.

    ``progress(done, total)`` is called as images finish. Raises ``ImageError`` for the first bad file, naming it.
    """
    out = np.empty((len(sources), size, size, 3), dtype=np.uint8)
    workers = workers or min(8, (os.cpu_count() or 1) + 2)

    def work(i: int) -> int:
        out[i] = load_named(sources[i], size, resize, f"image {i + 1}")
        return i

    with ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(work, range(len(sources))), start=1):
            if progress:
                progress(done, len(sources))
    return out


def preprocessing_spec(size: int, resize: str = "crop") -> dict:
    """The exact steps from a file to the model's input, as data (an export's ``preprocessing.json``) and words."""
    geometry = {
        "crop": "centre crop: the largest centred square (side = the shorter side, offsets rounded down)",
        "pad": "pad: scale so the longer side is {s} px (the shorter rounded to whole pixels), then centre on a "
        "{s} x {s} square filled with the ImageNet mean colour RGB {c}",
        "stretch": "stretch: both sides scaled to {s} px, the aspect ratio not kept",
    }[resize].format(s=size, c=list(_PAD_COLOR))
    return {
        "input": "an image file: JPEG, PNG, GIF, BMP, WebP or TIFF",
        "decode": [
            "decode to RGB uint8 (Pillow in the app)",
            f"JPEG: decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) when both sides stay >= {size} px",
            "EXIF orientation applied (Pillow's exif_transpose; the SavedModel reads a JPEG's orientation itself); "
            "animated images: the first frame",
            "transparency composited over white; 16-bit images scaled to 8 bits (x / 257, rounded)",
        ],
        "resize_strategy": resize,
        "size": size,
        "geometry": [
            geometry,
            f"resize to {size} x {size}: bilinear with antialiasing (tf.image.resize, antialias=True), "
            "rounded half to even, clipped to 0..255, uint8",
        ],
        "model_input": f"uint8 RGB, shape (batch, {size}, {size}, 3)",
        "normalisation_in_model": "RGB -> BGR, minus the ImageNet mean BGR (103.939, 116.779, 123.68), float32: "
        "keras.applications.vgg16.preprocess_input, as the model's first layer",
        "output": "softmax probabilities in the order of labels.txt (calibrated when the run was calibrated)",
    }
