"""Image decoding with Pillow: the first half of the one preprocessing pipeline, and thumbnails for the pages.

    pixels = decode("photo.jpg", size=224)    # (H, W, 3) uint8 RGB, EXIF-upright, JPEG drafted when big
    pic = thumbnail("photo.jpg", size=96)     # the model's look, Pillow only: pages show these without TensorFlow

The second half, the crop/pad/stretch and resize, runs as TensorFlow ops (``core.model.inputs.load_image``), the
same ones an exported model runs in its own graph. Images over ``settings.max_pixels`` are refused before decoding.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core import settings
from core.imaging.spec import PAD_COLOR
from core.util.errors import UserError

# A decompression bomb is refused, not merely warned about: the warning threshold (about 89 Mpx) already
# means a gigabyte of RGB pixels once decoded.
warnings.simplefilter("error", Image.DecompressionBombWarning)
ImageFile.LOAD_TRUNCATED_IMAGES = False

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"}
_DRAFT_FORMATS = {"JPEG", "MPO"}  # decoded at 1/2, 1/4 or 1/8 scale by libjpeg when the model needs fewer pixels
# ImageNet mean in RGB order; padding with it gives zeros after VGG16's mean subtraction.
_16BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

Source = str | os.PathLike | bytes


class ImageError(UserError):
    """An input file that is not a usable image; the message says why in a few words."""


def max_pixels() -> int:
    """The most pixels this server decodes from one image (``$CLASSIFIER_MAX_PIXELS``, default 40 million)."""
    return settings.current().max_pixels


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
        return ImageOps.pad(im, (size, size), Image.Resampling.BILINEAR, color=PAD_COLOR)
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
