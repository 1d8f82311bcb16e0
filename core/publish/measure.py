"""What the deployment report measures that needs the exports themselves: how fast each one answers one image on
one thread and on every core, and the images full-integer quantisation is calibrated on.

    rows = latency("onnx", bundle / "model.onnx", squares[:1])   # [{"threads": 1, "p50_ms": …}, {"threads": 2, …}]
    images, where = representative(run)                          # up to 100 of the run's training images

Latency is the model alone on one square uint8 image (no decoding: the SavedModel's ``square`` signature), the
median of ``RUNS`` calls after ``WARMUP``. LiteRT and onnxruntime are given their thread count per interpreter or
session. TensorFlow fixes its thread pools when it starts and cannot change them afterwards, so the SavedModel's
one-thread figure comes from a fresh process (``python -m core.publish.measure``, which sets them before anything
runs); its every-core figure from this process, on TensorFlow's default pools (every core). The report says which.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import numpy as np
import tensorflow as tf

from core.imaging.pillow import ImageError
from core.model.inputs import load_image
from core.model.predict import Run
from core.publish.bundles import ExportError
from core.publish.runtimes import RUNS, WARMUP, all_threads, open_runtime, timings
from core.workspace import runs

REPRESENTATIVE = 100  # training images the int8 export is calibrated on: TensorFlow's guide asks for ~100
ROOT = Path(__file__).resolve().parents[2]  # the project, for ``python -m`` in a fresh process
TIMEOUT = 900  # seconds for the fresh process: VGG16 at 224 px on one slow core takes ~1 s an image


def _summary(seconds: list[float], threads: int, where: str) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "threads": threads,
        "runs": len(ms),
        "p50_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "times_ms": [round(t, 4) for t in ms],
        "where": where,
    }


def latency(fmt: str, path: Path, one: np.ndarray, runs: int = RUNS) -> list[dict]:
    """One row per thread setting (one thread, then every core): the export of ``fmt`` at ``path`` on ``one``."""
    cores = all_threads()
    if fmt != "saved_model":
        return [_summary(timings(open_runtime(fmt, path, n), one, runs), n, "this process") for n in (1, cores)]
    fresh = _one_thread_elsewhere(path, one, runs)
    here = _summary(timings(open_runtime(fmt, path), one, runs), cores, "this process, TensorFlow's default pools")
    return [fresh, here]


def _one_thread_elsewhere(path: Path, one: np.ndarray, runs: int) -> dict:
    command = [sys.executable, "-m", "core.publish.measure", str(path), "--size", str(one.shape[1]),
               "--runs", str(runs)]  # fmt: skip
    done = subprocess.run(command, input=one.astype(np.uint8).tobytes(), capture_output=True, cwd=ROOT,
                          timeout=TIMEOUT, check=False)  # fmt: skip
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"timing the SavedModel on one thread failed: {tail[0]}")
    seconds = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return _summary(seconds, 1, "a fresh process (TensorFlow's pools are fixed when it starts)")


def representative(run: Run, limit: int = REPRESENTATIVE) -> tuple[np.ndarray, str]:
    """Up to ``limit`` of the run's training images, evenly spread over its list (every class), decoded as the app
    does (``core.model.inputs.load_image``); the validation images when the training ones are gone, saying so.

    Raises:
        ExportError: neither is on this server any more.
    """
    try:
        saved = runs.read_json(run.path / "split.json")
    except (OSError, ValueError):
        saved = {}
    root = Path(saved["root"]) if saved.get("root") else None
    held_out = "test" if saved.get("test") else "val"
    for part, name in (("train", "training"), (held_out, "test" if held_out == "test" else "validation")):
        listed = list(saved.get(part) or []) if root is not None else []
        picks = sorted({int(i) for i in np.linspace(0, len(listed) - 1, min(limit, len(listed)))}) if listed else []
        squares = _decoded(run, [root / listed[i] for i in picks])
        if squares:
            which = f"all {len(listed)}" if len(picks) == len(listed) else f"{len(picks)} of the {len(listed):,}"
            words = f"{len(squares)} {name} images ({which}, evenly spread over the list)"
            if part != "train":
                words += (
                    ": the training images are no longer on this server, so the int8 export was calibrated on the "
                    "images it is then scored on"
                )
            return np.stack(squares), words
    raise ExportError(
        f"The int8 export is calibrated on the run's training images, and neither they nor its validation images "
        f"are on this server any more: export {run.path.name} without litert-int8."
    )


def _decoded(run: Run, paths: list[Path]) -> list[np.ndarray]:
    out = []
    for path in paths:
        try:
            out.append(load_image(str(path), run.config.image_size, run.config.resize))
        except (OSError, ImageError):
            continue  # a file gone since training, or one the app refuses: the others calibrate
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m core.publish.measure SAVEDMODEL --size S --runs N``: the image's bytes on stdin (uint8, S×S×3),
    the seconds of each call on stdout as JSON, with TensorFlow on one thread."""
    p = argparse.ArgumentParser(prog="python -m core.publish.measure")
    p.add_argument("savedmodel")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--runs", type=int, default=RUNS)
    args = p.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)  # before the first op, or TensorFlow refuses
    tf.config.threading.set_inter_op_parallelism_threads(1)
    one = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape(1, args.size, args.size, 3)
    seconds = timings(open_runtime("saved_model", Path(args.savedmodel)), one, args.runs, WARMUP)
    print(json.dumps(seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
