"""A built-in sample dataset, drawn offline: shapes of three colours that even a small model learns quickly.

    path = make_sample_zip("work/sample.zip")          # circles / squares / triangles, 40 JPEGs each
    make_sample_image("circle", seed=7).save("x.jpg")  # a new image to classify

Each class has its own shape and dominant colour, drawn at a random place, size and rotation on a noisy
background, so the task is easy but not trivial, and any machine can try the whole app with no network.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = {"circle": (220, 60, 50), "square": (50, 160, 70), "triangle": (60, 90, 210)}
FIXED_DATE = (2016, 6, 1, 0, 0, 0)  # the zip's entries' date: any fixed one


def make_sample_image(cls: str, seed: int = 0, size: int = 128) -> Image.Image:
    """One synthetic RGB image of class ``cls`` (one of ``CLASSES``)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(150, 240, 3)
    noise = rng.normal(0, 18, (size, size, 3))
    im = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in CLASSES[cls])
    r = int(rng.integers(size // 6, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    if cls == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif cls == "square":
        draw.regular_polygon((cx, cy, r), 4, rotation=float(rng.uniform(0, 90)), fill=colour)
    else:
        draw.regular_polygon((cx, cy, r), 3, rotation=float(rng.uniform(0, 120)), fill=colour)
    return im.filter(ImageFilter.GaussianBlur(0.6))


def make_sample_zip(path: str | Path, per_class: int = 40, size: int = 128, seed: int = 0) -> Path:
    """Write the sample dataset as a zip of class folders (``sample/<class>/<n>.jpg``) and return its path.

    The same arguments always give the same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for k, cls in enumerate(CLASSES):
            for i in range(per_class):
                buf = io.BytesIO()
                make_sample_image(cls, seed=seed * 100_003 + k * 10_007 + i, size=size).save(buf, "JPEG", quality=90)
                # A fixed date and mode make the zip the same byte for byte on every call, so "Use the sample
                # dataset" from any session is the one saved dataset (core.workspace.datasets keys datasets by content).
                info = zipfile.ZipInfo(f"sample/{cls}/{cls}_{i:03d}.jpg", date_time=FIXED_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
    return path
