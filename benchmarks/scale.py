"""Scale: every stage of the product on a synthetic dataset of N distinct images, with its time, speed and memory.

    python benchmarks/scale.py --images 20000 --image-size 32
    python benchmarks/scale.py --images 100000 --image-size 64 --epochs 3

The dataset: ``--classes`` class folders of N distinct JPEGs (quality 90), each a random 4x4 colour grid blown up
to ``--image-size`` px with a tint per class, written straight into a zip (nothing held in memory). Then, in one
process and a fresh workspace, exactly what the app's jobs call:

  ingest       core.workspace.datasets.save_zip: stream-extract, check every image, write the manifest
  duplicates   core.data.hashes.dataset_hashes + core.data.duplicates.report: hash every image, pair search
  features     core.train.training.train's frozen-prefix pass (VGG16, random weights, float32 or bf16 by the CPU)
  head         the same training's fit on the cached features (``--epochs``), read in batches from disk when large
  evaluation   core.evaluate.evaluation.evaluate_run on the saved validation split

Per stage: seconds, images per second, and the process's peak resident memory during that stage (VmHWM, reset
between stages through /proc/self/clear_refs). A 100 000-image run takes about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_zip(path: Path, images: int, size: int, classes: int, seed: int = 0) -> Path:
    """N distinct images in class folders, encoded and written one at a time."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    tints = rng.integers(0, 256, (classes, 3))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(images):
            c = i % classes
            grid = rng.integers(0, 256, (4, 4, 3))
            grid = (0.6 * grid + 0.4 * tints[c]).astype(np.uint8)
            im = Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            zf.writestr(f"synthetic/class_{c:02d}/{i:06d}.jpg", buf.getvalue())
    return path


def reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stages:
    def __init__(self):
        self.rows: list[dict] = []

    def run(self, name: str, images: int, fn, seconds: float | None = None):
        reset_peak()
        t0 = time.perf_counter()
        out = fn()
        took = seconds(out) if callable(seconds) else time.perf_counter() - t0
        self.rows.append({"stage": name, "seconds": took, "images": images, "peak_rss_mb": peak_mb()})
        row = self.rows[-1]
        print(f"{name:12s}{took:10.1f} s{images / took if took else 0:12,.0f} img/s{row['peak_rss_mb']:10,.0f} MB",
              flush=True)  # fmt: skip
        return out


def measure(args, work: Path) -> list[dict]:
    os.environ.update({
        "CLASSIFIER_WORK_DIR": str(work / "workspace"), "CLASSIFIER_RUNS_DIR": str(work / "runs"),
        "CLASSIFIER_CACHE_DIR": str(work / "cache"), "CLASSIFIER_CACHE_LIMIT_MB": str(64 * 1024),
        "CLASSIFIER_QUOTA_MB": str(64 * 1024), "CLASSIFIER_DATASETS_MB": str(64 * 1024),
    })  # fmt: skip
    from core.config import TrainConfig
    from core.data import duplicates, hashes
    from core.evaluate.evaluation import evaluate_run
    from core.train.training import train
    from core.workspace import datasets

    t0 = time.perf_counter()
    data = make_zip(work / "synthetic.zip", args.images, args.image_size, args.classes)
    print(f"made {args.images:,} images at {args.image_size} px in {time.perf_counter() - t0:.0f} s "
          f"({data.stat().st_size / 1e6:,.0f} MB zip)\n", flush=True)  # fmt: skip
    print(f"{'stage':12s}{'time':>12s}{'speed':>18s}{'peak RSS':>13s}")
    stages = Stages()
    n = args.images
    saved = stages.run("ingest", n, lambda: datasets.save_zip(data, "synthetic"))
    ds = datasets.open_dataset(saved.id)
    found = stages.run("duplicates", n, lambda: duplicates.report(ds, hashes.dataset_hashes(ds)))
    config = TrainConfig(weights="none", image_size=args.image_size, epochs=args.epochs)
    result = None

    def fit():
        nonlocal result
        result = train(ds, config)
        return result

    reset_peak()
    t0 = time.perf_counter()
    fit()
    whole, rss = time.perf_counter() - t0, peak_mb()
    m = result.metrics
    train_n, val_n = m["train_images"], m["val_images"]
    feature_s, fit_s = m.get("feature_seconds") or 0.0, m.get("fit_seconds") or 0.0
    stages.rows += [
        {"stage": "features", "seconds": feature_s, "images": train_n + val_n, "peak_rss_mb": rss},
        {"stage": "head", "seconds": fit_s, "images": train_n * m["epochs_completed"], "peak_rss_mb": rss},
    ]
    for row in stages.rows[-2:]:
        print(f"{row['stage']:12s}{row['seconds']:10.1f} s{row['images'] / max(row['seconds'], 1e-9):12,.0f} img/s"
              f"{rss:10,.0f} MB (the training's peak, both stages)")  # fmt: skip
    print(f"{'':12s}training in all {whole:.1f} s; {m['epochs_completed']} epochs, path {m['path']}, "
          f"precision {m['precision']}")  # fmt: skip
    stages.run("evaluation", val_n, lambda: evaluate_run(result.run_dir))
    print(f"\n{found.pairs_total:,} near/exact pairs found among {n:,} images; "
          f"{train_n:,} training and {val_n:,} validation images")  # fmt: skip
    return stages.rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=10_000, help="images in the dataset (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=64, help="their size and the model's input (default: %(default)s)")
    p.add_argument("--classes", type=int, default=10, help="class folders (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="head training epochs (default: %(default)s)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    print(f"{args.images:,} images, {args.classes} classes, {args.image_size} px; cpus: {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        rows = measure(args, Path(tmp))
    print(f"peak RSS of the whole run: {max(r['peak_rss_mb'] for r in rows):,.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "stages": rows}, indent=2))


if __name__ == "__main__":
    main()
