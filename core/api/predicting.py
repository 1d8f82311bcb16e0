"""One prediction request: decode its images as the app does, batch them with others, answer each in words.

    answers, stored, note = await answer(batcher, run, key, [("a.jpg", b"..."), ...], user_agent)

The images go through ``core.model.predict.decode_one`` (the run's size and resize strategy: the app's own
preprocessing, so the API's numbers are ``python -m core predict``'s), then through the shared ``Batcher``. A file
that is not a usable image gets its own ``error`` sentence; the others are still answered. A key made with
``--store-predictions`` keeps what it was sent in the run's dataset review queue (``core.workspace.review``).
This module imports TensorFlow (through ``core.model``); the API imports it with the first prediction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from core.api.batching import Batcher
from core.model import calibration
from core.model.predict import decode_one
from core.util.errors import UserError
from core.workspace import keys, runs

log = logging.getLogger(__name__)


def _entry(name: str, classes: list[str], answer, error: str | None, threshold) -> dict[str, Any]:
    if answer is None:
        return {"file": name, "label": None, "probabilities": {}, "not_sure": None, "none_of_these": None,
                "error": error}  # fmt: skip
    row, _, unlike = answer
    best = int(np.argmax(row))
    top = float(row[best])
    return {
        "file": name,
        "label": classes[best],
        "probabilities": {c: float(p) for c, p in zip(classes, row, strict=True)},
        "not_sure": threshold is not None and top < threshold,
        "none_of_these": unlike,  # None: the run cannot say (core.model.ood)
        "error": None,
    }


async def answer(
    batcher: Batcher, info: runs.RunInfo, key: keys.ApiKey, files: list[tuple[str, bytes]]
) -> tuple[list[dict[str, Any]], int, str | None]:
    """The answers for ``files`` (name, bytes), how many were kept for review, and why not all were (or None)."""
    size, resize = info.config.image_size, info.config.resize
    decoded = await asyncio.gather(*(asyncio.to_thread(decode_one, data, size, resize) for _, data in files))
    good = [i for i, (arr, _) in enumerate(decoded) if arr is not None]
    answers = await batcher.answers(info.path, [decoded[i][0] for i in good])
    by_index = dict(zip(good, answers, strict=True))
    threshold = calibration.threshold_of(info.path)
    out = [_entry(name, info.classes, by_index.get(i), decoded[i][1], threshold) for i, (name, _) in enumerate(files)]
    stored, note = 0, None
    if key.store and good:
        stored, note = await asyncio.to_thread(_store, info, key, files, out, good)
    return out, stored, note


def _store(info: runs.RunInfo, key: keys.ApiKey, files, out, good) -> tuple[int, str | None]:
    """Keep the answered images in the run's dataset review queue; a full queue is said, never an error."""
    if not info.dataset_id:
        return 0, "This run was not trained on a saved dataset, so there is no review queue to keep the images in."
    from core.workspace import review

    stored = 0
    for i in good:
        p = out[i]
        top = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        try:
            review.enqueue(
                info.dataset_id, files[i][1], files[i][0], run_id=info.id, top=top, not_sure=bool(p["not_sure"]),
                none_of_these=p["none_of_these"], source="api", key_id=key.id,
            )  # fmt: skip
            stored += 1
        except UserError as exc:  # the queue is full, or the dataset was deleted: the answers still go out
            return stored, str(exc)
    return stored, None
