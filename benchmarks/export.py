"""Exports of a real run: the parity table, each format's size on disk, and one image's latency against the app's.

    nice -n 10 python benchmarks/export.py                      # ../shared/data/hymenoptera_data.zip, 224 px
    python benchmarks/export.py --data other.zip --image-size 128 --epochs 2 [--run runs/<id>]

Trains the tutorial's recipe briefly on the photos (random weights unless ImageNet's are cached: nothing is
downloaded), or takes ``--run``, then ``python -m core export`` does every format (with the int8 LiteRT) and its
parity check on the run's validation images. Latency: one photo from its encoded bytes to probabilities, median of
``--repeats`` after a warm-up, in this one process:

* app: ``core.model.predict.predict`` (Pillow decode, ``core.model.geometry``, the float32 model in one compiled
graph), and
  the tutorial's own pipeline (Pillow ``load_img`` + ``img_to_array`` + ``preprocess_input`` + ``model.predict``);
* SavedModel ``serving_default`` (decode and geometry inside); LiteRT and ONNX on the square image (the app's
  decode and geometry first, timed with them, since a caller must do that part).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from trust import cpu  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: graphs traced, sessions allocated
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/hymenoptera_data.zip"))
    parser.add_argument("--run", default=None, help="a saved run to export instead of training one")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from core.config import TrainConfig
    from core.data.dataset import load_dataset
    from core.train.training import train

    tmp = Path(tempfile.mkdtemp(prefix="export-bench-"))
    print(f"CPU: {cpu()}")
    if args.run:
        run_dir = Path(args.run)
    else:
        ds = load_dataset(args.data, tmp / "work")
        config = TrainConfig(weights="none", image_size=args.image_size, epochs=args.epochs)
        t = time.perf_counter()
        result = train(ds, config, tmp / "runs" / "bench-export")
        run_dir = result.run_dir
        print(f"trained {run_dir.name} ({config.head}, {args.image_size} px, {args.epochs} epochs, random weights) "
              f"in {time.perf_counter() - t:.0f} s")  # fmt: skip

    from core.publish.export import export_run
    from core.publish.runtimes import LiteRTRuntime, OnnxRuntime, SavedModelRuntime

    t = time.perf_counter()
    bundle = export_run(run_dir, tmp / "exports", int8=True, progress=lambda s, d, n: None)
    print(f"exported and checked in {time.perf_counter() - t:.0f} s; parity on {bundle.images_from}\n")
    print(f"{'export':12} {'input':15} {'images':>6} {'top-1':>7} {'largest diff':>13} {'target':>8}  result")
    for c in bundle.checks:
        target = "report" if c.target is None else f"{c.target:g}"
        print(f"{c.format:12} {c.input:15} {c.images:6} {c.top1_agreement:7.1%} {c.max_abs_diff:13.2e} {target:>8}  "
              f"{'ok' if c.passed else 'MISSED'}")  # fmt: skip
        for d in c.disagreements[:5]:
            print(f"    {d['image']}: app {d['app']}, export {d['export']}, {d['why']}")

    sizes = {}
    for name in ("model.keras", "model.tflite", "model_int8.tflite", "model.onnx"):
        sizes[name] = (bundle.path / name).stat().st_size
    sizes["savedmodel/"] = sum(p.stat().st_size for p in (bundle.path / "savedmodel").rglob("*") if p.is_file())
    print("\nsize on disk:")
    for name, n in sizes.items():
        print(f"  {name:20} {n / 1e6:8.1f} MB")

    import keras
    import numpy as np

    from core.imaging import pillow as images
    from core.model import geometry
    from core.model.predict import load_run, predict

    with zipfile.ZipFile(args.data) as zf:
        name = next(n for n in zf.namelist() if n.lower().endswith(".jpg") and "/val/" in n)
        data = zf.read(name)
    run = load_run(run_dir)
    size, resize = run.config.image_size, run.config.resize

    def square() -> np.ndarray:
        return geometry.square_image(images.decode(data, size), size, resize)[None]

    sm = SavedModelRuntime(bundle.path / "savedmodel")
    lite, lite8 = LiteRTRuntime(bundle.path / "model.tflite"), LiteRTRuntime(bundle.path / "model_int8.tflite")
    onnx = OnnxRuntime(bundle.path / "model.onnx")

    bare = keras.Model(run.model.layers[2].input, run.model.output)  # the model after its own normalisation

    def tutorial() -> None:  # the 2016 tutorial's own way to classify one file
        from keras.applications.vgg16 import preprocess_input
        from keras.utils import img_to_array, load_img

        x = img_to_array(load_img(io.BytesIO(data), target_size=(size, size)))[None]
        bare.predict(preprocess_input(x), verbose=0)

    rows = {
        "tutorial (load_img + predict)": median_ms(tutorial, args.repeats),
        "app (core.model.predict)": median_ms(lambda: predict(run, [data], threshold=None), args.repeats),
        "SavedModel (bytes in)": median_ms(lambda: sm.from_bytes([data]), args.repeats),
        "LiteRT float32": median_ms(lambda: lite(square()), args.repeats),
        "LiteRT int8": median_ms(lambda: lite8(square()), args.repeats),
        "ONNX": median_ms(lambda: onnx(square()), args.repeats),
    }
    app = rows["app (core.model.predict)"]
    print(f"\none image ({name.rsplit('/', 1)[-1]}, {len(data) / 1e3:.0f} KB JPEG) from bytes to probabilities, "
          f"median of {args.repeats}:")  # fmt: skip
    for label, ms in rows.items():
        print(f"  {label:32} {ms:8.1f} ms   {ms / app:5.2f}x the app")
    return 0


if __name__ == "__main__":
    sys.exit(main())
