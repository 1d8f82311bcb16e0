"""Training speed: the tutorial's pipeline as written versus the product's own training path, in one run.

    python benchmarks/train_speed.py                                   # generated dataset (120 images)
    python benchmarks/train_speed.py --data ../shared/data/hymenoptera_data.zip --epochs 30

Same hyperparameters for both: frozen convolutions, small-fc head, SGD 0.01 Nesterov, batch 64, 224 px,
random weights (no download). Each pipeline runs in its own process so that its peak RSS is its own.

(a) tutorial: every image centre-cropped, resized and mean-subtracted into one float32 array in memory,
    then ``model.fit`` through the whole VGG16 every epoch. It runs ``--tutorial-epochs`` epochs (default 1)
    and its total for N epochs is extrapolated from the measured time per epoch, and labelled so.
(b) product: ``core.train.training.train`` exactly as the app and the CLI call it (frozen-prefix feature cache,
    precision ``auto``), first with a cold disk cache, then again with another optimizer (cache hit), then
    warm single-image classification latency (median of 20), and the model's forward pass alone.

First it measures the machine's peak (``benchmarks/peak.py``: FMA loops on every core, and NumPy's matrix product)
and prints each pipeline's share of it: FLOP per image counted from the model's convolutions (2 per multiply-add).
The tutorial runs with TensorFlow's own defaults; the product turns oneDNN's convolutions on (core.settings).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
ONEDNN_BEFORE = "TF_ENABLE_ONEDNN_OPTS" in os.environ  # set by the user: the tutorial keeps it too


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tutorial(data: str, epochs: int, size: int, work: str) -> dict:
    """The 2016 tutorial's pipeline, ported to Keras 3 as written."""
    import keras
    import numpy as np
    from PIL import Image

    from core.data.dataset import load_dataset

    ds = load_dataset(data, work)  # only to list the same files; the loading below is the tutorial's own
    paths, labels = ds.paths(), ds.labels()
    t0 = time.perf_counter()
    x = np.zeros((len(paths), size, size, 3), dtype=np.float32)
    for i, p in enumerate(paths):
        im = Image.open(p).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size))
        a = np.asarray(im, dtype=np.float32)[..., ::-1]  # RGB -> BGR, as cv2 gives it
        x[i] = a - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    y = keras.utils.to_categorical(labels, len(ds.classes))
    order = np.random.default_rng(0).permutation(len(x))  # the tutorial shuffles before its tail split
    x, y = x[order], y[order]
    load_s = time.perf_counter() - t0

    keras.utils.set_random_seed(0)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    h = keras.layers.Flatten()(base.output)
    h = keras.layers.Dense(256, activation="relu")(h)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.Dense(256, activation="relu")(h)
    h = keras.layers.Dropout(0.5)(h)
    out = keras.layers.Dense(len(ds.classes), activation="softmax")(h)
    model = keras.Model(base.input, out)
    for layer in model.layers[:-5]:
        layer.trainable = False
    lr = keras.optimizers.schedules.InverseTimeDecay(0.01, 1, 1e-6)
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=64, epochs=epochs, validation_split=0.1, verbose=0, callbacks=[Timer()])
    n_train = len(x) - int(len(x) * 0.1)
    # The first epoch includes graph building; later ones (when run) are the steady state.
    per_epoch = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return {
        "images": len(paths),
        "load_s": load_s,
        "epoch_s": per_epoch,
        "epochs_run": epochs,
        "images_per_s": n_train / per_epoch,
        "peak_rss_mb": peak_rss_mb(),
    }


def product(data: str, epochs: int, size: int, work: str) -> dict:
    """The product's own path: exactly what the app and the CLI call."""
    from core.config import TrainConfig
    from core.data.dataset import load_dataset
    from core.model.predict import load_run, predict
    from core.train.training import train

    t0 = time.perf_counter()
    ds = load_dataset(data, work)
    ingest_s = time.perf_counter() - t0
    cfg = TrainConfig(weights="none", image_size=size, epochs=epochs)
    t0 = time.perf_counter()
    first = train(ds, cfg, Path(work) / "run1")
    total_s = time.perf_counter() - t0
    train_rss = peak_rss_mb()  # the training path's own peak, before the extra checks below
    t0 = time.perf_counter()
    second = train(
        ds,
        TrainConfig(weights="none", image_size=size, epochs=epochs, optimizer="adam", learning_rate=1e-3),
        Path(work) / "run2",
    )
    second_s = time.perf_counter() - t0

    run = load_run(first.run_dir)
    image = str(ds.paths()[0])
    predict(run, [image])  # warm-up: graph tracing
    lat, forward = [], []
    for _ in range(20):
        t = time.perf_counter()
        predict(run, [image])
        lat.append(time.perf_counter() - t)
    from core.model.inputs import load_images

    one = load_images([image], size, cfg.resize)
    for _ in range(20):  # the same compiled graph alone: what decoding and answering add is the rest
        t = time.perf_counter()
        run.outputs(one)
        forward.append(time.perf_counter() - t)
    fast_forward = []
    if run._fast_graph() is not None:  # the bfloat16 twin predict answers with first (core.model.predict)
        for _ in range(20):
            t = time.perf_counter()
            run.answers(one)
            fast_forward.append(time.perf_counter() - t)
    answered = {"bfloat16": run.answered_fast, "float32 again": run.rechecked}
    agreement = bf16_agreement(run, ds.paths()[:AGREEMENT_IMAGES])
    m = first.metrics
    return {
        "images": len(ds.items),
        "ingest_s": ingest_s,
        "load_s": m.get("load_seconds"),
        "feature_s": m.get("feature_seconds"),
        "images_per_s": m.get("feature_images_per_second"),
        "fit_s": m.get("fit_seconds"),
        "epoch_s": (m.get("fit_seconds") or 0) / max(m["epochs_completed"], 1),
        "total_s": total_s,
        "path": m.get("path"),
        "precision": m.get("precision"),
        "second_total_s": second_s,
        "second_cache": {k: second.metrics.get(k) for k in ("cache_hits", "cache_misses")},
        "classify_ms_median": statistics.median(lat) * 1000,
        "forward_ms_median": statistics.median(forward) * 1000,
        "fast_forward_ms_median": statistics.median(fast_forward) * 1000 if fast_forward else None,
        "answered": answered,
        "flop_per_image": conv_flops(run.model),
        "val_accuracy": m["val_accuracy"],
        "bf16_agreement": agreement,
        "peak_rss_mb": train_rss,
    }


AGREEMENT_IMAGES = 32


def conv_flops(model) -> float:
    """FLOP of one image through the model's convolutions: 2 per multiply-add (VGG16 at 224 px: 30.7 G)."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            kh, kw = layer.kernel_size
            total += 2.0 * h * w * c_out * kh * kw * layer.input.shape[-1] / layer.groups
    return total


def bf16_agreement(run, paths) -> float:
    """Share of images whose top class is the same with the trained weights in bfloat16 and in float32."""
    import numpy as np

    from core.config import TrainConfig
    from core.model.build import build_model
    from core.model.inputs import load_images

    config = TrainConfig(**{**run.config.to_dict(), "weights": "none", "precision": "bfloat16"})
    bf16 = build_model(config, len(run.classes))
    bf16.set_weights(run.model.get_weights())
    x = load_images(paths, config.image_size, config.resize)
    a = np.concatenate([np.asarray(run.model(x[i : i + 8], training=False)).argmax(1) for i in range(0, len(x), 8)])
    b = np.concatenate([np.asarray(bf16(x[i : i + 8], training=False)).argmax(1) for i in range(0, len(x), 8)])
    return float((a == b).mean())


def child(mode: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        env = {**os.environ, "CLASSIFIER_CACHE_DIR": str(Path(work) / "cache"), "CLASSIFIER_RUNS_DIR": work}
        if mode == "tutorial" and not ONEDNN_BEFORE:  # as a user runs it: TensorFlow's own defaults
            env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # (the product turns oneDNN's convolutions on: core.settings)
        cmd = [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--data",
            args.data,
            "--epochs",
            str(args.epochs),
            "--tutorial-epochs",
            str(args.tutorial_epochs),
            "--image-size",
            str(args.image_size),
            "--work",
            work,
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"{mode} pipeline failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="a dataset zip or folder (default: a generated dataset)")
    p.add_argument("--epochs", type=int, default=30, help="epochs for the comparison (default: %(default)s)")
    p.add_argument(
        "--tutorial-epochs",
        type=int,
        default=1,
        help="epochs the tutorial pipeline really runs; the rest is extrapolated (default: %(default)s)",
    )
    p.add_argument("--image-size", type=int, default=224, help="input size (default: %(default)s)")
    p.add_argument("--child", choices=["tutorial", "product"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        fn = tutorial if args.child == "tutorial" else product
        epochs = args.tutorial_epochs if args.child == "tutorial" else args.epochs
        print(json.dumps(fn(args.data, epochs, args.image_size, args.work)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        if args.data is None:
            from core.data.sample import make_sample_zip

            args.data = str(make_sample_zip(Path(tmp) / "generated.zip", per_class=40, size=256))
        from peak import peaks

        from core.model.build import cpu_has_fast_bf16

        peak = peaks()
        print(f"machine peak: float32 {peak['float32'] / 1e9:,.0f} GFLOP/s"
              + (f", bfloat16 {peak['bfloat16'] / 1e9:,.0f}" if peak["bfloat16"] else "")
              + (f" (AMX tiles; vector vdpbf16ps {peak['bfloat16_vector'] / 1e9:,.0f})" if peak.get("amx") else "")
              + f" ({peak['how']}); NumPy's float32 matrix product {peak['matmul'] / 1e9:,.0f} GFLOP/s")  # fmt: skip

        print(
            f"data: {args.data}; {args.epochs} epochs at {args.image_size} px; cpus: {os.cpu_count()}; "
            f"bf16 hardware: {'yes' if cpu_has_fast_bf16() else 'no'}",
            flush=True,
        )
        a = child("tutorial", args)
        b = child("product", args)

    a_total = a["load_s"] + a["epoch_s"] * args.epochs
    rows = [
        ("images", a["images"], b["images"]),
        ("load images into memory (s)", a["load_s"], None),
        ("decode + frozen layers once (s)", None, b["feature_s"]),
        ("feature pass / forward (img/s)", a["images_per_s"], b["images_per_s"]),
        ("time per epoch (s)", a["epoch_s"], b["epoch_s"]),
        (f"total for {args.epochs} epochs (s)", a_total, b["total_s"]),
        ("peak RSS (MB)", a["peak_rss_mb"], b["peak_rss_mb"]),
    ]
    print(f"\n{'':34s}{'(a) tutorial':>16s}{'(b) product':>16s}")
    for name, x, y in rows:
        print(f"{name:34s}{_fmt(x):>16s}{_fmt(y):>16s}")
    print(
        f"\n(a) ran {args.tutorial_epochs} epoch(s); its total for {args.epochs} epochs is extrapolated from the "
        "time per epoch."
    )
    print(f"speed-up (a)/(b), total time:        {a_total / b['total_s']:.1f}x")
    print(f"peak RSS (b)/(a):                    {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")
    print(f"(b) training path:                   {b['path']}; precision {b['precision']}")
    print(f"(b) second training, other optimizer: {b['second_total_s']:.1f} s; cache {b['second_cache']}")
    print(
        f"warm single-image classify:          {b['classify_ms_median']:.0f} ms median of 20 "
        f"(the model's float32 forward pass alone: {b['forward_ms_median']:.0f} ms"
        + (f", bfloat16 {b['fast_forward_ms_median']:.0f} ms" if b["fast_forward_ms_median"] else "")
        + ")"
    )
    print(f"classify answers: {b['answered']}")  # fmt: skip
    top = peak["bfloat16"] if b["precision"] == "bfloat16" else peak["float32"]
    for name, speed in (("(a) forward in fit", a["images_per_s"]), ("(b) feature pass", b["images_per_s"])):
        achieved = speed * b["flop_per_image"]
        print(f"{name + ', share of peak:':37s}{achieved / 1e9:,.0f} GFLOP/s = {achieved / top:.0%} of the "
              f"{b['precision']} peak, {achieved / peak['matmul']:.0%} of the matrix product")  # fmt: skip
    print(f"(b) validation accuracy:             {b['val_accuracy']:.3f}")
    print(f"bf16 vs float32 top-1 agreement:     {b['bf16_agreement']:.1%} of {AGREEMENT_IMAGES} images")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"


if __name__ == "__main__":
    main()
