"""The prediction API under load: 8 clients at once against one model, compared with the model's own batched speed.

    python benchmarks/api_load.py      # a run trained here on the built-in sample: VGG16, random weights, 224 px
    python benchmarks/api_load.py --clients 8 --seconds 30 --image-size 224 --data ../shared/data/hymenoptera_data.zip

This process is the server: it trains a run (one epoch), measures the model's own batched forward throughput
(``Run.probabilities`` on batches of 32 decoded images: the ceiling), then serves the real application
(``server:app``: Streamlit's ASGI app with the API mounted) with uvicorn on a thread, while a separate process runs
the clients (httpx, asyncio): each sends one photo per request, as fast as it is answered, for ``--seconds``.
Printed: images/s through the API, p50/p95 latency, the ratio of the API's throughput to the model's own batched
throughput (goal >= 0.8), the forward passes the server ran and their mean batch, and this process's RSS before
the load (model loaded) and after it (goal: no growth beyond the model cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = sorted({f for f in ("avx512_bf16", "amx_bf16", "avx2") if f in info.split()}) or ["no avx2"]
    return f"{model}, {os.cpu_count()} cpus; {', '.join(flags)}"


def clients_main(url: str, token: str, seconds: float, clients: int, photos: list[str]) -> None:
    """The load, in its own process: prints one JSON line of latencies and counts."""
    import httpx

    data = [Path(p).read_bytes() for p in photos]
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=120) as c:
            end, n = time.perf_counter() + seconds, i
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                r = await c.post(url, headers={"Authorization": f"Bearer {token}"},
                                 files=[("files", (f"{n}.jpg", data[n % len(data)]))])  # fmt: skip
                if r.status_code == 200 and r.json()["predictions"][0]["error"] is None:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                n += clients

    async def everyone() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(everyone())
    print(json.dumps({"latencies": latencies, "errors": errors, "elapsed": elapsed}))


def make_run(tmp: Path, data: str | None, size: int) -> tuple[Path, list[str]]:
    from core.config import TrainConfig
    from core.data.dataset import load_dataset
    from core.train.training import train

    if data is None:
        from core.data.sample import make_sample_zip

        data = str(make_sample_zip(tmp / "sample.zip"))
    ds = load_dataset(data, tmp / "extracted")
    config = TrainConfig(weights="none", image_size=size, epochs=1, precision="float32")
    result = train(ds, config, Path(os.environ["CLASSIFIER_RUNS_DIR"]) / "api-load")
    photos = [str(ds.root / it.path) for it in ds.items[:64]]
    return result.run_dir, photos


def forward_ceiling(run_dir: Path, photos: list[str], seconds: float = 10.0) -> float:
    """Images/s of the model's own batched forward pass (batches of 32 decoded images), this process."""
    import numpy as np

    from core.model.predict import decode_all, load_run

    run = load_run(run_dir)
    arrays = [a for a, _ in decode_all(run, photos[:32] * (32 // max(1, len(photos[:32]))))]
    batch = np.stack((arrays * 32)[:32])
    run.probabilities(batch)  # the graph traced once
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        run.probabilities(batch)
        times.append(time.perf_counter() - t0)
    return 32 / statistics.median(times)


def serve(port: int) -> threading.Thread:
    import httpx
    import uvicorn

    config = uvicorn.Config("server:app", host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                return thread
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a dataset zip for the run trained here (default: the built-in sample)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="api-load-") as tmp_name:
        tmp = Path(tmp_name)
        for name in ("CLASSIFIER_WORK_DIR", "CLASSIFIER_RUNS_DIR", "CLASSIFIER_CACHE_DIR", "KERAS_HOME"):
            os.environ[name] = str(tmp / name.lower())
        os.environ["CLASSIFIER_API_IMAGES_PER_MINUTE"] = "1000000"  # the load is the point: no rate limit
        os.environ["CLASSIFIER_WARM_WORKER"] = "0"
        run_dir, photos = make_run(tmp, args.data, args.image_size)
        from core.workspace import access, keys

        _, token = keys.create(run_dir.name, access.OPERATOR, "load")
        print(f"CPU: {cpu()}")
        ceiling = forward_ceiling(run_dir, photos)
        print(f"model's own batched forward (batch 32, {args.image_size} px): {ceiling:.2f} images/s")
        serve(args.port)
        rss_before = rss_mb()
        proc = subprocess.run(
            [sys.executable, __file__, "--_clients", f"http://127.0.0.1:{args.port}/api/v1/runs/{run_dir.name}/predict",
             token, str(args.seconds), str(args.clients), *photos],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rss_after = rss_mb()
        report(result, ceiling, args, rss_before, rss_after)


def report(result: dict, ceiling: float, args, rss_before: float, rss_after: float) -> None:
    import httpx

    lat = sorted(result["latencies"])
    ips = len(lat) / result["elapsed"]
    health = httpx.get(f"http://127.0.0.1:{args.port}/api/v1/health").json()
    p50, p95 = statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    print(f"API, {args.clients} clients x {args.seconds:.0f} s, one image per request: {len(lat)} answered, "
          f"{result['errors']} refused or failed")  # fmt: skip
    print(f"  throughput {ips:.2f} images/s; latency p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    print(f"  ratio to the model's own batched throughput: {ips / ceiling:.2f} (goal >= 0.8)")
    print(f"  forward passes: {health['batches']}, mean batch {health['images'] / max(1, health['batches']):.1f}")
    print(f"  server RSS: {rss_before:.0f} MB before the load, {rss_after:.0f} MB after "
          f"({(rss_after - rss_before) / rss_before * 100:+.1f} %)")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_clients":
        url, token, seconds, clients, *photos = sys.argv[2:]
        clients_main(url, token, float(seconds), int(clients), photos)
    else:
        main()
