"""The model card's figure: the confusion matrix drawn with Pillow.

confusion_png(run_dir)               # PNG bytes, or None before an evaluation
draw_confusion(classes, confusion)   # the same from the numbers
"""

from __future__ import annotations

import io
import os

from PIL import Image, ImageDraw, ImageFont

from core.evaluate.evaluation import load_evaluation
from core.workspace import runs

# The confusion matrix image: cells shrink as classes grow, so 100 classes still fit a printed page's width.
CELL_MAX, CELL_MIN, GRID_TARGET = 56, 14, 900
LABEL_CHARS = 24  # longer class names are cut with "…" on the axes (the tables keep them whole)
PAD = 10
INK, GRID, DARK = (33, 37, 41), (206, 212, 218), (22, 72, 135)  # text, cell borders, a row share of 1


# ---------------------------------------------------------------------------------------------- the confusion matrix


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):  # wide Unicode coverage
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font (needs FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def confusion_geometry(classes: list[str]) -> tuple[int, int, int]:
    """(left, top, cell): where the grid of ``confusion_png`` starts and each cell's side, in pixels."""
    cell = max(CELL_MIN, min(CELL_MAX, GRID_TARGET // max(len(classes), 1)))
    font = _font(_font_size(cell))
    label = max((int(font.getlength(_short(c))) for c in classes), default=0)
    title = _font_size(cell) + 2 * PAD  # the axis titles "True class" / "Predicted class"
    return title + label + PAD, title + label + PAD, cell


def _font_size(cell: int) -> int:
    return max(9, min(15, int(cell * 0.34)))


def draw_confusion(classes: list[str], confusion: list[list[int]]) -> bytes:
    """A PNG of the matrix: rows = true class, columns = predicted, counts in the cells, shaded by row share."""
    n = len(classes)
    left, top, cell = confusion_geometry(classes)
    size = _font_size(cell)
    font = _font(size)
    width, height = left + n * cell + PAD, top + n * cell + PAD
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for i, row in enumerate(confusion):
        total = sum(row)
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            fill = tuple(round(255 + (d - 255) * share) for d in DARK)
            x, y = left + j * cell, top + i * cell
            draw.rectangle((x, y, x + cell, y + cell), fill=fill, outline=GRID)
            if cell >= 2 * size:  # a count that cannot fit is left to the shade (and to the tables)
                ink = "white" if share > 0.5 else INK
                draw.text((x + cell / 2, y + cell / 2), str(count), fill=ink, font=font, anchor="mm")
        draw.text((left - PAD, top + i * cell + cell / 2), _short(classes[i]), fill=INK, font=font, anchor="rm")
    # Column names read upwards: drawn on a strip that is then turned a quarter to the left.
    strip = Image.new("RGB", (top - size - 2 * PAD, n * cell), "white")
    strip_draw = ImageDraw.Draw(strip)
    for j, name in enumerate(classes):
        strip_draw.text((PAD, j * cell + cell / 2), _short(name), fill=INK, font=font, anchor="lm")
    img.paste(strip.rotate(90, expand=True), (left, size + 2 * PAD))
    draw.text((left + n * cell / 2, PAD), "Predicted class", fill=INK, font=font, anchor="mt")
    axis = Image.new("RGB", (n * cell, size + 2 * PAD), "white")
    ImageDraw.Draw(axis).text((n * cell / 2, PAD), "True class", fill=INK, font=font, anchor="mt")
    img.paste(axis.rotate(90, expand=True), (0, top))
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


def confusion_png(run_dir: str | os.PathLike) -> bytes | None:
    """The run's confusion matrix as a PNG, or None when it has not been evaluated."""
    ev = load_evaluation(runs.check_run(run_dir))
    return draw_confusion(list(ev.classes), ev.confusion) if ev is not None and ev.confusion else None
