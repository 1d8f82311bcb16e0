"""Time estimates against real runs: how far is the estimate the Train page shows from the time the run takes?

    nice -n 10 python benchmarks/estimate_error.py                        # ../shared/data/hymenoptera_data.zip
    python benchmarks/estimate_error.py --data other.zip --cases b,c      # some cases only

Random weights (no download), precision ``auto``, a fresh speed file: nothing measured on this server yet.
For each case the estimate is made as the page makes it: the layer names from the static layer table, the speed
from ``known_speed``, measured first by ``measure_in_background`` (the page's probe: a job, in a worker process)
when unknown. Then ``core.train.training.train`` is timed with an empty feature cache, so a cached-feature run includes
its cold feature pass. The run records its own fit time (``core.train.training`` calls ``record_run_pace`` at the end
of every run), and a second run of the same case, again with an empty cache, is compared with the corrected
estimate. Errors are (estimate - actual) / actual; the goal is within ±30 %. The 1-minute load average before
and after each run shows what else ran on the machine: a run that shares the cores with other work takes longer
than any estimate made before it could know.

(a) cached features, 224 px: the tutorial's freeze (small-fc head, last 5 layers, SGD 0.01), 3 epochs
(b) end to end, 96 px: gap head, every layer unfrozen, Adam 1e-4, batch 16, 2 epochs
(c) as (b) with augmentation (flip, rotation 10°)
(d) end to end with augmentation (flip, rotation 10°), 96 px, the tutorial's freeze, 2 epochs
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TUTORIAL = {"weights": "none"}  # TrainConfig's defaults are the tutorial's recipe
END_TO_END = {"weights": "none", "head": "gap", "unfreeze": 10**6, "optimizer": "adam", "learning_rate": 1e-4,
              "decay": 0.0, "batch_size": 16}  # fmt: skip
AUGMENT = {"augment_flip": True, "augment_rotation": 10.0}
CASES = {
    "a": ("cached features, 224 px, the tutorial's freeze, 3 epochs", {**TUTORIAL, "image_size": 224, "epochs": 3}),
    "b": ("end to end, 96 px, every layer unfrozen, 2 epochs", {**END_TO_END, "image_size": 96, "epochs": 2}),
    "c": ("(b) with augmentation (flip, rotation 10)", {**END_TO_END, **AUGMENT, "image_size": 96, "epochs": 2}),
    "d": (
        "augmentation (flip, rotation 10), 96 px, the tutorial's freeze, 2 epochs",
        {**TUTORIAL, **AUGMENT, "image_size": 96, "epochs": 2},
    ),
}
GOAL = 0.30
PROBE_TIMEOUT = 900  # seconds: the probe shares 2 cores with whatever else runs


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "?")
    out = subprocess.run(["grep", "-o", r"avx512_bf16\|amx[a-z0-9_]*", "/proc/cpuinfo"], capture_output=True, text=True)
    flags = sorted(set(out.stdout.split())) or ["neither avx512_bf16 nor amx"]
    return f"{model}, {os.cpu_count()} cpus; {', '.join(flags)}"


def page_speed(size: int, precision: str) -> tuple[float, float | None]:
    """What the page does: the known speed, or a background probe and a wait for it. (speed, probe seconds)."""
    from core.jobs.probes import measure_in_background, measuring
    from core.train.pace import known_speed

    speed = known_speed(size, precision)
    if speed is not None:
        return speed, None
    start = time.monotonic()
    measure_in_background(size, precision)
    while (speed := known_speed(size, precision)) is None:
        if time.monotonic() - start > PROBE_TIMEOUT or not measuring(size, precision):
            if (speed := known_speed(size, precision)) is not None:
                break
            sys.exit(f"the speed probe at {size} px did not record a speed")
        time.sleep(1)
    return speed, time.monotonic() - start


def page_unfrozen(config) -> list[str]:
    """The layer names the page passes: the static layer table and the last ``unfreeze`` of its rows."""
    from core.model.vgg16 import layer_table, unfrozen_mask

    rows = layer_table(config.head, config.image_size, 2)
    return [r["name"] for r, m in zip(rows, unfrozen_mask(len(rows), config.unfreeze), strict=True) if m]


def timed_run(ds, config, work: Path, name: str):
    from core.train.cache import ArrayCache
    from core.train.training import train

    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = train(ds, config, work / "runs" / name, cache=ArrayCache(work / f"features-{name}"))
    result.metrics["load_before"], result.metrics["load_after"] = load, os.getloadavg()[0]
    return result, time.perf_counter() - start


def breakdown(actual: float, m: dict) -> str:
    prepare = m.get("feature_seconds", m.get("load_seconds")) or 0.0
    fit = m["fit_seconds"]
    other = actual - prepare - fit
    load = f"load average {m['load_before']:.1f} before, {m['load_after']:.1f} after"
    return f"{actual:6.1f} s = prepare {prepare:5.1f} + fit {fit:6.1f} + build, final score, save {other:4.1f} ({load})"


def line(est, actual: float) -> str:
    from core.util.text import human_time

    return (
        f"{est.seconds:6.1f} s {human_time(est.seconds):>9s} = prepare {est.prepare_seconds:5.1f} + the rest "
        f"{est.fit_seconds:6.1f}   error {err(est.seconds, actual)}"
    )


def err(estimate: float, actual: float) -> str:
    e = (estimate - actual) / actual
    return f"{e:+5.0%}  {'yes' if abs(e) <= GOAL else 'NO '}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/hymenoptera_data.zip"), help="dataset zip")
    p.add_argument("--cases", default=",".join(CASES), help="which cases, in order (default: %(default)s)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
        work = Path(tmp)
        os.environ["CLASSIFIER_CACHE_DIR"] = str(work / "cache")  # speed.json starts empty here
        os.environ["CLASSIFIER_RUNS_DIR"] = str(work / "runs")
        from core.config import TrainConfig
        from core.data.dataset import load_dataset, split_dataset
        from core.train.estimates import estimate

        ds = load_dataset(args.data, work / "data")
        print(f"cpu: {cpu()}")
        print(f"data: {args.data}: {len(ds.items)} images; precision auto; random weights; fresh speed file")
        rows = []
        for case in args.cases.split(","):
            title, options = CASES[case]
            config = TrainConfig(**options).validate()
            train_idx, val_idx = split_dataset(ds, config)
            n_train, n_val = len(train_idx), len(val_idx)
            unfrozen = page_unfrozen(config)
            print(f"\n({case}) {title}", flush=True)
            speed, probe = page_speed(config.image_size, config.precision)
            how = f"measured now by the background probe in {probe:.0f} s" if probe else "already known"
            print(f"    speed at {config.image_size} px: {speed:.1f} images/s ({how}; load average now "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")  # fmt: skip
            first = estimate(config, n_train, n_val, speed, unfrozen, calibrate=False)
            shown = estimate(config, n_train, n_val, speed, unfrozen)
            result, actual = timed_run(ds, config, work, f"{case}1")
            m = result.metrics
            print(f"    path: estimated '{first.path}', the run took '{m['path']}'")
            print(f"    run 1: {breakdown(actual, m)}")
            print(f"      estimate, speed probe alone: {line(first, actual)}")
            if shown.calibrated_runs:
                print(f"      estimate the page shows:     {line(shown, actual)}  "
                      f"(corrected by {shown.calibrated_runs} earlier run(s) of this kind)")  # fmt: skip
            again = estimate(config, n_train, n_val, None, unfrozen)
            result2, actual2 = timed_run(ds, config, work, f"{case}2")
            print(f"    run 2: {breakdown(actual2, result2.metrics)}")
            note = f"corrected by {again.calibrated_runs} run(s)" if again.calibrated_runs else "no correction applies"
            print(f"      estimate after run 1:        {line(again, actual2)}  ({note})")
            rows.append((case, first.seconds, actual, again.seconds, actual2))

        print(
            f"\n{'case':6s}{'first estimate':>16s}{'run 1':>9s}{'error':>8s}"
            f"{'after run 1':>14s}{'run 2':>9s}{'error':>8s}"
        )
        for case, e1, a1, e2, a2 in rows:
            print(
                f"({case})   {e1:14.0f} s{a1:7.0f} s{(e1 - a1) / a1:+8.0%}{e2:12.0f} s{a2:7.0f} s{(e2 - a2) / a2:+8.0%}"
            )
        worst = max(abs(e - a) / a for _, e1, a1, e2, a2 in rows for e, a in ((e1, a1), (e2, a2)))
        print(f"worst error {worst:.0%}: {'within' if worst <= GOAL else 'outside'} the ±{GOAL:.0%} goal")
        print("speed file:", re.sub(r"\s+", " ", (work / "cache" / "speed.json").read_text()))


if __name__ == "__main__":
    main()
