"""Figures as people read them: sizes, durations, counts.

human_size(3_500_000)   # '3.3 MB'
human_time(200)         # '3:20 min' (the progress bars' ETA style)
count(3, "image")       # '3 images'
"""

from __future__ import annotations


def human_size(n: float) -> str:
    """'512 bytes', '3.4 MB', '1.2 GB': a size as people read it."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_time(seconds: float) -> str:
    """12 s, 3:20 min, 1:05 h: the same style as the progress bars' ETA."""
    s = max(round(seconds), 1)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d} min"
    return f"{s // 3600}:{s % 3600 // 60:02d} h"


def count(n: int, one: str, many: str | None = None) -> str:
    """'1 image', '3 images', '2 classes' (``many``: the plural when it is not ``one`` + s)."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"
