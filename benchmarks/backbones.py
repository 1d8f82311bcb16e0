"""Every backbone on real photos, measured as the bake-off measures it: per backbone the frozen layers' pass in
images/s (a cold feature cache; the first batch's graph compilation included, as a user waits for it), the head's
training seconds, the float32 model's size, and one image's latency (median) on one thread and on every core, with
ratios against VGG16 measured in the same run.

    nice -n 10 python benchmarks/backbones.py                       # ../shared/data/hymenoptera_data.zip, 224 px
    python benchmarks/backbones.py --limit 16 --image-size 64 --backbones mobilenet_v3_small,vgg16

Each backbone goes through ``core.publish.bakeoff`` as the app and ``python -m core bakeoff`` run it: a gap head on
the frozen backbone, its features computed once per image into a fresh cache (so the pass is timed cold), Adam with
early stopping on the validation loss, then ``core.publish.trial.latency_ms`` on the float32 model (one compiled
graph, median of 20 calls after 3). Random weights by default (``--weights none``): ImageNet's cannot be downloaded
here, and speed and size do not depend on them (accuracy does; it is printed for completeness). TensorFlow fixes its
thread pools when it starts, so the one-thread latency comes from a fresh process per backbone (this script again,
with ``--one-thread NAME``); the every-core figure from this process, as the app's worker measures it. VGG16 is
always measured, since the ratios are against it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from trust import cpu  # noqa: E402


def subset(ds, limit: int | None):
    """At most ``limit`` images of ``ds``, taken evenly from each (split, class) group so every group keeps some."""
    if not limit or limit >= len(ds.items):
        return ds
    groups: dict[tuple[str, int], list] = {}
    for item in ds.items:
        groups.setdefault((item.split, item.label), []).append(item)
    share = max(1, limit // len(groups))
    kept = [it for items in groups.values() for it in items[:: max(1, math.ceil(len(items) / share))][:share]]
    return dataclasses.replace(ds, items=kept)


def one_thread_latency(name: str, size: int) -> float:
    """This backbone's float32 model (random weights) on one image, TensorFlow on one thread (a fresh process)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # before the first op, or TensorFlow refuses
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from core.config import TrainConfig
    from core.model.build import as_float32, build_model
    from core.publish.bakeoff import backbone_config
    from core.publish.trial import latency_ms

    config = backbone_config(TrainConfig(weights="none", image_size=size, precision="float32"), name)
    return latency_ms(as_float32(build_model(config, 2)), size)


def measure_one_thread(name: str, size: int) -> float | None:
    done = subprocess.run([sys.executable, __file__, "--one-thread", name, "--image-size", str(size)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800, check=False)  # fmt: skip
    if done.returncode != 0:
        print(f"  one-thread latency of {name} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return float(done.stdout.strip().splitlines()[-1])


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def ratio(ours: float | None, vgg: float | None, higher_is_better: bool, better: str, worse: str) -> str:
    """Ours against VGG16's figure in words: "16× smaller", "2.1× slower", "about the same"."""
    if not ours or not vgg:
        return "–"
    r = ours / vgg if higher_is_better else vgg / ours
    if abs(r - 1) < 0.05:
        return "about the same"
    words, r = (better, r) if r > 1 else (worse, 1 / r)
    return f"{r:.1f}× {words}" if r < 10 else f"{r:.0f}× {words}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/hymenoptera_data.zip"))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--weights", choices=("none", "imagenet"), default="none")
    parser.add_argument("--backbones", default=None, help="comma-separated (default: all); vgg16 is always added")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images (default: all)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one-thread", default=None, metavar="NAME", help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args()
    if args.one_thread:
        print(one_thread_latency(args.one_thread, args.image_size))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="backbones-bench-"))
    os.environ["CLASSIFIER_CACHE_DIR"] = str(tmp / "cache")  # a cold feature cache: every pass is timed
    from core.config import TrainConfig
    from core.data.dataset import load_dataset
    from core.model.backbones import NAMES
    from core.publish.bakeoff import bakeoff, check_names
    from core.publish.runtimes import all_threads

    names = check_names(args.backbones.split(",") if args.backbones else None)
    names = names if "vgg16" in names else ["vgg16", *names]
    ds = subset(load_dataset(args.data, tmp / "work"), args.limit)
    print(f"CPU: {cpu()}; {all_threads()} threads for this process")
    weights = "random" if args.weights == "none" else "ImageNet"
    print(f"{ds.report.source}: {len(ds.items)} images, {len(ds.classes)} classes, {args.image_size} px, {weights} "
          f"weights; backbones: {', '.join(names)} (of {', '.join(NAMES)})\n")  # fmt: skip
    t = time.perf_counter()
    seen: set[str] = set()

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            print(f"{time.perf_counter() - t:7.0f} s  {stage}", file=sys.stderr, flush=True)

    base = TrainConfig(weights=args.weights, image_size=args.image_size)
    result = bakeoff(ds, names, base, progress=progress)
    rows = {r["backbone"]: r for r in result.rows}
    for name in names:
        if rows[name]["error"] is None:
            print(f"{time.perf_counter() - t:7.0f} s  {name}: one-thread latency (fresh process)", file=sys.stderr)
            rows[name]["latency_1_thread_ms"] = measure_one_thread(name, args.image_size)
    report(names, rows, result, all_threads())
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [rows[n] for n in names], **result.to_dict()}, indent=2))
    return 0


def report(names: list[str], rows: dict, result, threads: int) -> None:
    vgg = rows["vgg16"]
    print(f"\n{result.train_images} training and {result.val_images} validation images, {result.seconds:.0f} s in all; "
          f"precision {result.settings['precision']} for the feature pass, float32 for latency\n")  # fmt: skip
    head = (f"{'backbone':20} {'features img/s':>14} {'head s':>7} {'size MB':>8} {'params':>11} "
            f"{'p50 1 thr ms':>12} {f'p50 {threads} thr ms':>12} {'val acc':>7}   against vgg16")  # fmt: skip
    print(head)
    for name in names:
        r = rows[name]
        if r["error"]:
            print(f"{name:20} error: {r['error']}")
            continue
        one = r.get("latency_1_thread_ms")
        versus = "–" if name == "vgg16" else ", ".join([
            ratio(r["size_mb"], vgg["size_mb"], False, "smaller", "larger"),
            ratio(one, vgg.get("latency_1_thread_ms"), False, "faster", "slower") + " (1 thr)",
            ratio(r["latency_ms"], vgg["latency_ms"], False, "faster", "slower") + f" ({threads} thr)",
            ratio(r["feature_images_per_second"], vgg["feature_images_per_second"], True, "faster", "slower")
            + " feature pass",
        ])  # fmt: skip
        print(f"{name:20} {fmt(r['feature_images_per_second']):>14} {fmt(r['fit_seconds']):>7} {fmt(r['size_mb']):>8} "
              f"{r['params']:>11,} {fmt(one):>12} {fmt(r['latency_ms']):>12} {fmt(r['val_accuracy'], '.1%'):>7}   "
              f"{versus}")  # fmt: skip
    if result.recommendation:
        print(f"\nbake-off recommendation: {result.recommendation['text']}")


if __name__ == "__main__":
    sys.exit(main())
