"""What a job's process does about itself on its machine: yield the CPU, say how much memory it held."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

NICE = 10  # a job's process yields the CPU to the web server: its pages answer at once while a job trains


def lower_priority() -> None:
    """Yield the CPU to the web server. A worker has a session of its own, and with it (on Linux with automatic
    process groups) a scheduling group of its own, in which its nice value counts for nothing against the web
    server's: the group's nice value is lowered too."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(NICE))


def peak_mb() -> float:
    """What this process has held at its peak, in MB (``ru_maxrss`` is in kilobytes on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def figures() -> dict[str, float]:
    """What a worker adds to its job's metrics: its peak memory, for the soak benchmark and anyone watching."""
    return {"worker_peak_mb": peak_mb()}
