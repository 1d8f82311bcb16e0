"""Many trainings through the job executor, as the web server runs them: does the server grow, how fast do jobs start?

    python benchmarks/soak.py                       # 20 trainings on the built-in sample, 64 px, random weights
    python benchmarks/soak.py --runs 5 --data ../shared/data/hymenoptera_data.zip

This process plays the web server: it holds the job registry (the dispatcher) and submits one training after the
other, each run by a worker process of its own. It prints this process's RSS after the first and after the last
training (goal: growth <= 5 %), each worker's peak RSS, the time from submitting to the first progress in the
records (what the page shows after Train), and how long a whole training takes once the frozen layers' features
are cached (the second and later runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a dataset zip (default: the generated sample)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        for name in ("CLASSIFIER_WORK_DIR", "CLASSIFIER_RUNS_DIR", "CLASSIFIER_CACHE_DIR", "KERAS_HOME"):
            os.environ[name] = f"{tmp}/{name.lower()}"
        from core.config import TrainConfig
        from core.jobs.registry import JobRegistry
        from core.jobs.states import COMPLETED
        from core.workspace.datasets import open_dataset, save_zip

        data = args.data
        if data is None:
            from core.data.sample import make_sample_zip

            data = str(make_sample_zip(Path(tmp) / "sample.zip"))
        ds = open_dataset(save_zip(data).id)
        reg = JobRegistry(max_running=1)
        config = TrainConfig(weights="none", image_size=args.image_size, epochs=args.epochs, precision="float32")
        rows = []
        for i in range(args.runs):
            t0 = time.perf_counter()
            job = reg.submit(ds, config, name=f"soak-{i}")
            first = None
            while True:
                snap = reg.get(job.id, points=False)
                if first is None and (snap.done > 0 or snap.finished):
                    first = time.perf_counter() - t0
                if snap.finished:
                    break
                time.sleep(0.02)
            total = time.perf_counter() - t0
            if snap.state != COMPLETED:
                sys.exit(f"run {i} ended {snap.state}: {snap.error}")
            rows.append({"first": first, "total": total, "peak": snap.metrics.get("worker_peak_mb"), "rss": rss_mb()})
            peak, rss = rows[-1]["peak"], rows[-1]["rss"]
            print(f"run {i + 1:2d}: first progress {first:5.2f} s, whole training {total:6.2f} s, "
                  f"worker peak {peak:.0f} MB, this process {rss:.0f} MB", flush=True)  # fmt: skip
        reg.close()
    flags = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "?")
    growth = (rows[-1]["rss"] - rows[0]["rss"]) / rows[0]["rss"]
    later = [r["total"] for r in rows[1:]] or [rows[0]["total"]]
    print(f"CPU: {cpu} ({os.cpu_count()} cores; avx512_bf16: {'avx512_bf16' in flags}, amx: {'amx' in flags})")
    print(f"dataset: {ds.report.total} images; {args.image_size} px, {args.epochs} epochs, random weights")
    print(f"server-side RSS after the first run {rows[0]['rss']:.0f} MB, after the last {rows[-1]['rss']:.0f} MB: "
          f"{growth:+.1%} (goal <= 5 %)")  # fmt: skip
    print(f"worker peak RSS: median {statistics.median(r['peak'] for r in rows):.0f} MB, "
          f"max {max(r['peak'] for r in rows):.0f} MB")  # fmt: skip
    print(f"Train to first progress: median {statistics.median(r['first'] for r in rows):.2f} s (goal <= 5 s)")
    print(f"whole training on cached features (runs 2+): median {statistics.median(later):.2f} s (goal <= 8 s); "
          f"first run {rows[0]['total']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
