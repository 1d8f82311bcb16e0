"""The paces measured on this server, kept in ``speed.json`` in the cache folder, and read without TensorFlow.

    known_speed(96, "auto")           # images/s through VGG16's convolutions at 96 px, or None (measure first)
    fit_costs(96, "auto")             # what Keras fit costs per image relative to that, and whether measured
    record_speed(96, "bfloat16", 42.0)

Three kinds of measurement are kept:

* the *forward speed* (images per second through every VGG16 convolution, compiled, inference) at a size and
  precision: by every full feature pass of a real run, and by the speed test (``core.train.speedtest``);
* the *fit costs* at a size, by the speed test: what Keras ``fit`` costs per image relative to that forward pass
  when every layer trains, when only the head trains behind frozen convolutions, and per validation image, plus
  the one-off graph tracing. At small sizes per-image overhead dominates, so these are measured at the size
  asked for, never scaled by pixel count from 224 px (which made a 6-minute run at 96 px read "2:41");
* a *correction per kind of run* (cached features, end to end, end to end with augmentation), from finished
  runs (``core.train.estimates.record_run_pace``).

``auto`` precision is resolved by whoever measured with TensorFlow loaded, and the answer is kept in the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

from core.train.cache import cache_dir

FILE = "speed.json"
NEAR = 1.25  # a speed measured at a size within this factor of another stands in for it (scaled by pixels)
# What Keras fit costs per image, in units of one compiled forward pass through every convolution, until the
# probe has measured it here (bfloat16 on a 2-core AVX512-BF16 EPYC at 32-224 px: 2.9-4.1, 0.7-1.0, 0.8-1.5).
DEFAULT_FIT = {"train_all": 3.5, "fit_forward": 0.9, "test": 1.0, "trace_train": 5.0, "trace_frozen": 1.0}
_lock = threading.Lock()


def _path() -> Path:
    return cache_dir() / FILE


def read() -> dict[str, Any]:
    """The file as {"auto": ..., "forward": {...}, "fit": {...}, "runs": {...}}; an old flat file is forward speeds."""
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}

    def speeds(table: Any) -> dict[str, float]:
        items = table.items() if isinstance(table, dict) else ()
        return {k: float(v) for k, v in items if "/" in k and isinstance(v, int | float) and v > 0}

    def records(table: Any) -> dict[str, dict]:
        return {k: v for k, v in table.items() if isinstance(v, dict)} if isinstance(table, dict) else {}

    # Format 1 was a flat {"float32/224": 4.0}: those are forward speeds.
    out: dict[str, Any] = {"forward": {**speeds(data), **speeds(data.get("forward"))}}
    out["fit"], out["runs"] = records(data.get("fit")), records(data.get("runs"))
    if isinstance(data.get("auto"), str):
        out["auto"] = data["auto"]
    return out


@contextlib.contextmanager
def update():
    """Read, change and write the file under a lock shared by every process; atomic; a no-op on a read-only folder."""
    with _lock:
        path = _path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_name(f".{FILE}.lock"), "a")  # noqa: SIM115  (held for the whole update)
        except OSError:
            yield read()  # an estimate is a nicety: a read-only cache folder must not fail a run
            return
        with lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass  # no flock (Windows): threads are still serialised by _lock
            data = read()
            yield data
            tmp = path.with_name(f".{FILE}.{os.getpid()}.{threading.get_ident()}")
            try:
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                tmp.replace(path)  # readers see the old file or the new one, never half of one
            except OSError:
                tmp.unlink(missing_ok=True)


def key(image_size: int, precision: str) -> str:
    return f"{precision}/{image_size}"


def resolved_precision(precision: str, data: dict[str, Any]) -> str | None:
    """``auto`` as this machine resolved it when TensorFlow was loaded (None if never); other names as they are."""
    return data.get("auto") if precision == "auto" else precision


def _sizes(table: dict[str, Any], precision: str) -> list[tuple[int, Any]]:
    out = []
    for k, v in table.items():
        p, _, s = k.rpartition("/")
        if p == precision and s.isdigit():
            out.append((int(s), v))
    return out


def nearest(table: dict[str, Any], precision: str, image_size: int, near: float | None) -> tuple[int, Any] | None:
    """The entry measured at the size closest to ``image_size`` (by ratio), if within ``near`` (None: any)."""
    sizes = _sizes(table, precision)
    if not sizes:
        return None
    size, value = min(sizes, key=lambda sv: abs(math.log(sv[0] / image_size)))
    if near is not None and max(size / image_size, image_size / size) > near:
        return None
    return size, value


def resolve_now(precision: str) -> str | None:
    """``auto`` resolved: from the file, or by TensorFlow when this process has loaded it already."""
    if precision != "auto":
        return precision
    if resolved := read().get("auto"):
        return resolved
    if "tensorflow" in sys.modules:  # only then: this module is read by pages, which never load TensorFlow
        from core.model.build import resolve_precision

        resolved = resolve_precision("auto")
        record_precision("auto", resolved)
        return resolved
    return None


def record_precision(requested: str, resolved: str) -> None:
    """Remember what ``auto`` means on this machine, so that a process without TensorFlow can look it up."""
    if requested != "auto" or resolved == "auto":
        return
    with update() as data:
        data["auto"] = resolved


def record_speed(image_size: int, precision: str, images_per_second: float) -> None:
    """Remember a measured forward speed (images per second through every VGG16 convolution, compiled)."""
    if not images_per_second > 0 or not (resolved := resolve_now(precision)):
        return
    with update() as data:
        data["forward"][key(image_size, resolved)] = round(float(images_per_second), 3)


def known_speed(image_size: int, precision: str) -> float | None:
    """The forward speed measured at this size, or at a size within ``NEAR`` scaled by pixel count; else None.

    ``precision`` may be ``auto``: it is found once any measurement here has resolved it. None means: measure
    (``core.jobs.probes.measure_in_background``), since speeds far from the size asked for do not scale by pixel count.
    """
    data = read()
    precision = resolved_precision(precision, data)
    hit = nearest(data["forward"], precision, image_size, NEAR) if precision else None
    if hit is None:
        return None
    size, speed = hit
    return float(speed) * (size / image_size) ** 2


def fit_costs(image_size: int, precision: str) -> tuple[dict[str, float], bool]:
    """Keras fit's costs per image relative to the forward pass, from the probe at the nearest size measured here,
    and whether they were measured (else ``DEFAULT_FIT``)."""
    data = read()
    precision = resolved_precision(precision, data)
    hit = nearest(data["fit"], precision, image_size, None) if precision else None
    if hit is None or not isinstance(hit[1], dict):
        return dict(DEFAULT_FIT), False
    return {**DEFAULT_FIT, **{k: float(v) for k, v in hit[1].items() if k in DEFAULT_FIT}}, True


def correction(data: dict[str, Any], kind: str, image_size: int, precision: str | None) -> tuple[float, int]:
    """(factor, runs) that finished runs of this kind near this size measured; (1.0, 0) when none did."""
    if not precision:
        return 1.0, 0
    runs = {k.removeprefix(f"{kind}/"): v for k, v in data["runs"].items() if k.startswith(f"{kind}/")}
    hit = nearest(runs, precision, image_size, NEAR)
    if hit is None or not isinstance(hit[1], dict):
        return 1.0, 0
    return float(hit[1].get("factor", 1.0)), int(hit[1].get("runs", 0))


def describe(image_size: int, precision: str) -> str:
    """One line on what is measured here at this size: for the command line."""
    data = read()
    resolved = resolved_precision(precision, data) or precision
    speed = data["forward"].get(key(image_size, resolved))
    costs = data["fit"].get(key(image_size, resolved)) or {}
    line = f"{resolved} at {image_size} px: {speed:.1f} images/s through VGG16's convolutions" if speed else ""
    if costs.get("train_all") and speed:
        line += (
            f"; training every layer {speed / costs['train_all']:.1f} images/s, only the head "
            f"{speed / costs['fit_forward']:.1f} images/s"
        )
    return line or f"nothing measured at {image_size} px in {resolved}"
