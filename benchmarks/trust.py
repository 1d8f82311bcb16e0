"""Trust figures on real photos: calibration error before and after, and how well suspected label errors are found.

    nice -n 10 python benchmarks/trust.py                      # ../shared/data/hymenoptera_data.zip
    python benchmarks/trust.py --data other.zip --flip 0.1 --image-size 128 --epochs 10

The photos' own train/ folder trains, with ``--flip`` of its labels changed on purpose (each picked image moved to
another class's folder, seeded); their val/ folder is cut in two, half for validation (where the temperature and
the "not sure" threshold are fitted) and half for test/ (where they are judged: images neither training nor
calibration saw), with their labels left true. Then:

* calibration: the expected calibration error (15 bins) and the NLL on the test half, before and after the
  temperature, as ``python -m core evaluate`` reports them, and what the "not sure" threshold does there;
* label errors: ``core.evaluate.label_issues.find_label_issues`` on the run; precision and recall of its suspects
against
  the images flipped on purpose (the search covers training and validation images; only training ones were
  flipped, so a suspect among the validation images counts against precision).

Weights: ImageNet weights when ``--weights imagenet`` and they are cached (nothing is downloaded here), else
random ones (the default). With random weights the frozen convolutions are a random projection: both figures say
what the machinery does with weak features, not what a pretrained VGG16 would reach.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "?")
    out = subprocess.run(["grep", "-o", r"avx512_bf16\|amx[a-z0-9_]*", "/proc/cpuinfo"], capture_output=True, text=True)
    flags = sorted(set(out.stdout.split())) or ["neither avx512_bf16 nor amx"]
    return f"{model}, {os.cpu_count()} cpus; {', '.join(flags)}"


def build(data: Path, dest: Path, flip: float, seed: int) -> set[str]:
    """Lay out train/ (some labels flipped), val/ and test/ (halves of the photos' val/); return the flipped paths."""
    with zipfile.ZipFile(data) as zf:
        zf.extractall(dest / "src")
    from core.data.dataset import load_dataset

    src = load_dataset(dest / "src", dest / "scan")
    rng = random.Random(seed)
    out = dest / "photos"
    train = [it for it in src.items if it.split == "train"]
    val = [it for it in src.items if it.split == "val"]
    rng.shuffle(val)
    flipped_items = set(rng.sample(range(len(train)), round(flip * len(train))))
    flipped: set[str] = set()
    for i, it in enumerate(train):
        cls = src.classes[it.label]
        if i in flipped_items:
            cls = rng.choice([c for c in src.classes if c != cls])
        target = out / "train" / cls / Path(it.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.root / it.path, target)
        if i in flipped_items:
            flipped.add(str(target.relative_to(out)))
    for k, it in enumerate(val):
        part = "val" if k % 2 == 0 else "test"
        target = out / part / src.classes[it.label] / Path(it.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.root / it.path, target)
    return flipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hymenoptera_data.zip"))
    parser.add_argument("--flip", type=float, default=0.1, help="share of training labels flipped on purpose")
    parser.add_argument("--weights", default="none", help="none (random) or imagenet (if cached)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trust-") as tmp:
        tmp = Path(tmp)
        for name in ("runs", "cache", "work", "keras"):
            (tmp / name).mkdir()
        os.environ.update(
            CLASSIFIER_RUNS_DIR=str(tmp / "runs"), CLASSIFIER_CACHE_DIR=str(tmp / "cache"),
            CLASSIFIER_WORK_DIR=str(tmp / "work"),
        )  # fmt: skip
        if args.weights != "imagenet":
            os.environ["KERAS_HOME"] = str(tmp / "keras")
        flipped = build(Path(args.data), tmp, args.flip, args.seed)

        from core.config import TrainConfig
        from core.data.dataset import load_dataset
        from core.evaluate.evaluation import evaluate_run
        from core.evaluate.label_issues import find_label_issues
        from core.model import calibration
        from core.train.training import train

        ds = load_dataset(tmp / "photos", tmp / "scan2")
        config = TrainConfig(weights=args.weights, image_size=args.image_size, epochs=args.epochs, seed=args.seed)
        print(f"CPU: {cpu()}")
        print(f"data: {Path(args.data).name}: {ds.report.counts}")
        print(
            f"training: weights {args.weights}, {args.image_size} px, the tutorial's recipe (small-fc head, last "
            f"{config.unfreeze} layers, SGD {config.learning_rate:g} Nesterov), {args.epochs} epochs; "
            f"{len(flipped)} training labels flipped ({args.flip:.0%})"
        )
        t0 = time.monotonic()
        result = train(ds, config, tmp / "runs" / "trust")
        print(f"trained in {time.monotonic() - t0:.0f} s: val_accuracy {result.metrics['val_accuracy']:.3f}")
        report = calibration.load(result.run_dir)
        print(
            f"validation ({report.images} images, where the temperature is fitted): temperature "
            f"{report.temperature:.3f}, ECE {report.ece_before:.4f} -> {report.ece_after:.4f}, "
            f"NLL {report.nll_before:.4f} -> {report.nll_after:.4f}"
        )
        print(f"  {report.summary()}")
        ev = evaluate_run(result.run_dir, ds)
        c = ev.calibration
        print(
            f"test ({ev.images} images, never seen by training or calibration): accuracy {ev.accuracy:.3f}, "
            f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}, NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}"
        )
        if c["threshold"] is not None:
            print(
                f"  not-sure threshold {c['threshold']:.3f}: answers {c['coverage']:.0%} of the test images, "
                f"{c['accepted_accuracy']:.1%} of those right"
            )
        t0 = time.monotonic()
        found = find_label_issues(result.run_dir)
        suspects = {s["file"] for s in found.suspects}
        hits = len(suspects & flipped)
        precision = hits / len(suspects) if suspects else 0.0
        recall = hits / len(flipped) if flipped else 0.0
        print(
            f"label errors ({found.images} images searched, {found.folds} folds, {time.monotonic() - t0:.0f} s; "
            f"{found.features}): out-of-fold agreement with the given labels {found.out_of_fold_accuracy:.3f}"
        )
        print(
            f"  {len(suspects)} suspects, {hits} of the {len(flipped)} flipped images: "
            f"precision {precision:.2f}, recall {recall:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
