"""How long the Train page takes to draw, against what it used to cost: building VGG16 to list its layers.

    python benchmarks/page_render.py
    python benchmarks/page_render.py --data ../shared/data/hymenoptera_data.zip --repeats 10

In a fresh process (as after a server start), through Streamlit's own script runner (AppTest): save the dataset
in the workspace (as an upload is), then draw the Train page with it, once cold and ``--repeats`` times warm; each
render's time is the script run's wall time. Then, in the same run, the old way of filling the layer table:
``keras.applications.VGG16`` built with the page's head and size (``core.model.build.build_model``, TensorFlow imported
first), as the page did on its first visit. The goal: a warm Train page in at most 2 s, and no TensorFlow in the
page's process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE = """
import json, sys, time
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
from core.workspace.datasets import open_dataset, save_zip

ds = open_dataset(save_zip({data!r}).id)  # saved in the workspace, as an upload is: the form is read and written
at = AppTest.from_file({app!r}, default_timeout=600)
at.session_state["dataset"] = ds.id
at.run()
times = []
for i in range({repeats} + 1):
    t0 = time.perf_counter()
    at.switch_page("pages/train.py").run()
    times.append(time.perf_counter() - t0)
    assert not at.exception, [e.value for e in at.exception]
    assert any(b.label == "Start training" for b in at.button)
print(json.dumps({{"cold": times[0], "warm": times[1:], "tensorflow": "tensorflow" in sys.modules,
                   "images": ds.report.total}}))
"""

BUILD = """
import json, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
from core.config import TrainConfig
from core.model.build import build_model, describe_layers
t1 = time.perf_counter()
rows = describe_layers(build_model(TrainConfig(weights="none", unfreeze=10**6, precision="float32"), 2))
t2 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "build": t2 - t1, "layers": len(rows)}}))
"""


def run(code: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"benchmark step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a dataset zip (default: the generated sample)")
    parser.add_argument("--repeats", type=int, default=5, help="warm renders to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="page-render-") as tmp:
        env = {**os.environ, "CLASSIFIER_WORK_DIR": f"{tmp}/work", "CLASSIFIER_CACHE_DIR": f"{tmp}/cache",
               "CLASSIFIER_RUNS_DIR": f"{tmp}/runs", "KERAS_HOME": f"{tmp}/keras"}  # fmt: skip
        data = args.data
        if data is None:
            from core.data.sample import make_sample_zip

            data = str(make_sample_zip(Path(tmp) / "sample.zip"))
        page = run(PAGE.format(root=str(ROOT), data=data, app=str(ROOT / "app.py"), repeats=args.repeats), env)
        build = run(BUILD.format(root=str(ROOT)), env)
    flags = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "?")
    warm = statistics.median(page["warm"])
    old = build["import"] + build["build"]
    print(f"CPU: {cpu} ({os.cpu_count()} cores; avx512_bf16: {'avx512_bf16' in flags}, amx: {'amx' in flags})")
    print(f"dataset: {page['images']} images")
    print(f"Train page, first render in a fresh process: {page['cold']:.2f} s")
    print(f"Train page, warm render, median of {len(page['warm'])}: {warm:.2f} s (goal <= 2 s)")
    print(f"TensorFlow loaded by the page's process: {'yes' if page['tensorflow'] else 'no'}")
    print(
        f"old layer table (import TensorFlow {build['import']:.2f} s + build VGG16 {build['build']:.2f} s, "
        f"{build['layers']} layers): {old:.2f} s"
    )
    print(f"ratio, old layer table alone / whole warm render now: {old / warm:.1f}x")


if __name__ == "__main__":
    main()
