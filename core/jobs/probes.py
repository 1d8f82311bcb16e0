"""The speed test as a job: queued for a page that needs a time estimate, found again by any process.

    job = measure_in_background(96, "auto", owner=user)   # queued (or the one already queued near this size)
    probe(96, "auto")                                      # that job while it is queued or running, with progress

The speed test (``core.train.speedtest``) waits for a free slot like a training, since on 2 cores it would distort
a running training and be distorted by it; it lets the work people asked for go first, and shows on the Jobs page.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from core.jobs.kinds import SPEED
from core.jobs.registry import JobRegistry
from core.jobs.registry import registry as this_registry
from core.jobs.states import JobSnapshot
from core.train.pace import NEAR

RETRY_AFTER = 600.0  # seconds before a probe that ended without a speed is queued again for the same size
_submit_lock = threading.Lock()


def _near(size: Any, image_size: int) -> bool:
    return isinstance(size, int) and size > 0 and max(size / image_size, image_size / size) <= NEAR


def _probes(image_size: int, precision: str, registry: JobRegistry | None, recent: float) -> list:
    """Speed tests in this precision at this size or one within ``NEAR`` (whose speed stands in for it, as in
    ``known_speed``), the closest size first: queued and running ones, and those finished within ``recent`` s."""
    found = [
        j
        for j in (registry or this_registry()).jobs(recent=recent)
        if j.kind == SPEED and j.params.get("precision") == precision
        and _near(j.params.get("image_size"), image_size)
    ]  # fmt: skip
    return sorted(found, key=lambda j: abs(math.log(j.params["image_size"] / image_size)))


def probe(image_size: int, precision: str, registry: JobRegistry | None = None) -> JobSnapshot | None:
    """The speed test queued or running for this size (or one near it) and precision, read from the jobs table."""
    pending = [j for j in _probes(image_size, precision, registry, 0.0) if not j.finished]
    return pending[0] if pending else None


def measuring(image_size: int, precision: str, registry: JobRegistry | None = None) -> bool:
    """Whether a speed test for this size (or one near it) and precision is queued or running, on any server
    process that shares this workspace."""
    return probe(image_size, precision, registry) is not None


def measure_in_background(
    image_size: int,
    precision: str,
    *,
    owner: str = "",
    images: int | None = None,
    registry: JobRegistry | None = None,
) -> JobSnapshot | None:
    """Queue the speed probe as a job (kind ``SPEED``) and return it at once; ``known_speed`` has the
    answer when it ends (about 10-40 s once it has a slot).

    The job waits for a free slot like a training (it would distort a running one, and be distorted by it),
    shows on the Jobs page under ``owner``, and loads TensorFlow in its worker, never here. A speed test already
    queued or running for this size (or one near it) and precision is returned instead of a new one; after one
    that ended without a speed (failed, stopped, or its speed could not be saved) this returns None for
    ``RETRY_AFTER`` seconds. ``registry``: the one to queue on, default this process's.
    """
    with _submit_lock:  # two script runs of this process asking at once queue one probe
        found = _probes(image_size, precision, registry, RETRY_AFTER)
        if pending := [j for j in found if not j.finished]:
            return pending[0]
        if found:
            return None
        params = {"image_size": image_size, "precision": precision, **({"images": images} if images else {})}
        return (registry or this_registry()).submit_task(SPEED, params, owner=owner)
