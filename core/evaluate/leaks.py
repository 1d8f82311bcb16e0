"""Validation and test images that duplicate a training image of a run: how many, as the Evaluate page and the model
card tell it.

    held_out_duplicates(run_dir, "val")    # (3, 40) when 3 of 40 validation images copy a training image
    over_limit(run_dir)                    # 0.05 when more looked alike than training could drop, so it dropped none

Read from the run's files and its saved dataset's cached hashes (``core.data.duplicates``); nothing is hashed here.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.data import hashes
from core.util.files import read_json
from core.workspace import records


def held_out_duplicates(run_dir: str | os.PathLike, part: str = "val") -> tuple[int, int] | None:
    """(images of the run's ``part`` -- "val" or "test" -- that duplicate one of its training images, images in it).

    From the run's metrics when training checked (``val_duplicates``, ``test_duplicates``); for a run trained before
    that, from the hashes its saved dataset has cached (never hashing here: a page calls it). None when unknown:
    no split.json, an old run whose dataset has no cached hashes, or a part the run does not have.
    """
    run_dir = Path(run_dir)
    try:
        split = read_json(run_dir / "split.json")
        held = list(split.get(part) or [])
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if not held:
        return None
    try:
        metrics = read_json(run_dir / "metrics.json")
    except (OSError, ValueError):
        metrics = {}
    key = f"{part}_duplicates"
    if isinstance(metrics, dict) and isinstance(metrics.get(key), int):
        return metrics[key], len(held)
    store = records.folder_of_files(split.get("root"))
    h = hashes.read_hashes(store) if store else None
    if h is None:
        return None
    paths = h.paths
    index = {p: k for k, p in enumerate(paths)}
    train = [index[p] for p in split.get("train") or [] if p in index]
    queries = [index[p] for p in held if p in index]
    return int(hashes.duplicated(h, queries, train).sum()), len(held)


def over_limit(run_dir: str | os.PathLike) -> float | None:
    """The limit when training found more validation duplicates than it may drop and so dropped none; else None."""
    try:
        limit = read_json(Path(run_dir) / "metrics.json").get("val_duplicates_over_limit")
    except (OSError, ValueError, AttributeError):
        return None
    return float(limit) if isinstance(limit, int | float) and not isinstance(limit, bool) else None
