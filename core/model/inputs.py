"""The model's input from an image file: Pillow's decoding, then the same TensorFlow crop/pad/stretch and resize an
export runs in its own graph (``core.model.geometry``). Training, prediction, evaluation and explanation read images
through here; pages show ``core.imaging.pillow.thumbnail`` instead, which needs no TensorFlow.

    arr = load_image("photo.jpg", size=224, resize="crop")     # (224, 224, 3) uint8, RGB: the model's input
    batch = load_images(paths, 224, progress=report)           # (n, 224, 224, 3), decoded on a thread pool

Images stay uint8 until the model's first layer (``core.model.build.VGGPreprocess``) turns them into VGG16's input
(RGB->BGR minus the ImageNet mean), so a dataset in memory costs 150 KB per 224 px image, not 600 KB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.imaging.pillow import ImageError, Source, decode
from core.imaging.spec import RESIZE_MODES
from core.model.geometry import square_image


def load_image(source: Source, size: int, resize: str = "crop") -> np.ndarray:
    """Decode one image file (path or bytes) into the model's ``(size, size, 3)`` uint8 RGB input.

    ``decode``, then ``core.model.geometry.square_image``: the crop/pad/stretch and resize that every export runs
    inside its own graph, so the app and an export see the same pixels.

    Raises:
        ImageError: the file is not an image we accept, is damaged or truncated, or has too many pixels.
    """
    # a caller's mistake, not a bad file: checked first so it cannot come out as an ImageError blaming the image
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}. Received: resize={resize!r}")
    return square_image(decode(source, size), size, resize)


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
