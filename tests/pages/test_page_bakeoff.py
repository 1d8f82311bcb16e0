"""The Train page's bake-off through AppTest: the button submits a job with the form's weights and size and the chosen
backbones, its progress shows per backbone with Stop, and a finished one's table, chart and recommendation render
(again from the address after a reload), with "Use …" setting the form's backbone. The bake-off itself is a stand-in:
the real one is tested in tests/core/publish/test_bakeoff.py."""

from __future__ import annotations

import json
import threading
import time

import pytest
from pagetest import JOB_TIMEOUT, assert_clean, button, load, open_app, texts

from core.jobs.store import FLUSH_SECONDS

# (validation accuracy, size MB, latency ms) of the stand-in: mobilenet_v3_small is within 1 point of the best
FIGURES = {"vgg16": (0.90, 58.9, 37.0), "mobilenet_v3_small": (0.905, 3.8, 2.0),
           "mobilenet_v3_large": (0.85, 12.0, 4.0), "efficientnet_v2_b0": (0.88, 23.0, 20.0),
           "convnext_tiny": (0.91, 111.0, 60.0), "resnet50": (0.89, 94.0, 40.0)}  # fmt: skip
HOLD = threading.Event()  # the stand-in waits for this after 3 images of a backbone's feature pass
HOLD.set()
HOLD_FOR: set[str] = set()  # the backbones that wait for it (none: every one)
calls: list[dict] = []


def fake_bakeoff(dataset, names=None, base_config=None, progress=None, stop=None, int8=False, on_row=None, cache=None):
    from core.publish.bakeoff import COMPLETED, STOPPED, Bakeoff, check_names, empty_row, recommend, sort_rows

    names = check_names(names)
    calls.append({"names": names, "config": base_config, "int8": int8})
    rows = []
    for i, name in enumerate(names, start=1):
        for done in range(11):
            if stop.is_set():
                break
            if done == 3:  # past the writer's throttle, so that this count reaches the records before the hold
                time.sleep(FLUSH_SECONDS + 0.1)
            progress(f"backbone {i} of {len(names)} ({name}) · features", done, 10)
            while done == 3 and name in (HOLD_FOR or {name}) and not HOLD.wait(0.05) and not stop.is_set():
                pass
            time.sleep(0.005)
        if stop.is_set():
            break
        accuracy, size, latency = FIGURES[name]
        rows.append({**empty_row(name), "val_accuracy": accuracy, "size_mb": size, "latency_ms": latency,
                     "params": int(size * 250_000), "epochs": 5})  # fmt: skip
        on_row(rows[-1])
    status = STOPPED if len(rows) < len(names) else COMPLETED
    rows = sort_rows(rows)
    return Bakeoff(rows, status, names, recommend(rows, 60, status == STOPPED), dataset=dataset.title,
                   image_size=base_config.image_size, weights=base_config.weights, int8=int8, train_images=24,
                   val_images=60, settings={"epochs": 15}, seconds=2.0)  # fmt: skip


@pytest.fixture
def fast_bakeoff(monkeypatch):
    import core.jobs.work  # TensorFlow loads here, not first in a job's thread while a page is parsed
    import core.publish.bakeoff

    calls.clear()
    HOLD_FOR.clear()
    monkeypatch.setattr(core.publish.bakeoff, "bakeoff", fake_bakeoff)


def wait_for(ready, at=None) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT
    while not ready():
        assert time.monotonic() < deadline
        time.sleep(0.05)
        if at is not None:
            at.run()
            assert_clean(at)


def progress_text(at) -> str:
    bars = at.get("progress")
    return bars[0].proto.text if bars else ""


def vega_specs(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def test_the_bakeoff_runs_as_a_job_and_its_result_recommends_a_backbone_the_form_takes(tmp_path, fast_bakeoff):
    from core.jobs.kinds import BAKEOFF
    from core.jobs.registry import registry
    from core.model.backbones import NAMES

    ds = load(tmp_path)
    at = open_app("pages/train.py", dataset=ds.id)
    assert "Compare backbones (bake-off)" in texts(at.subheader)
    assert at.multiselect(key="bakeoff_backbones").value == list(NAMES)  # every backbone by default
    at.radio(key="cfg_weights").set_value("none")
    at.slider(key="cfg_image_size").set_value(96).run()
    HOLD.clear()
    try:
        button(at, "Compare backbones").click().run()
        assert_clean(at)
        [job] = [j for j in registry().jobs() if j.kind == BAKEOFF]
        assert at.query_params["bakeoff"] == [job.id] or at.query_params["bakeoff"] == job.id
        assert job.params["backbones"] == list(NAMES) and job.params["int8"] is False
        assert job.params["config"]["weights"] == "none" and job.params["config"]["image_size"] == 96
        assert job.dataset_id == ds.id
        wait_for(lambda: "3/10" in progress_text(at), at)
        assert progress_text(at).startswith("Backbone 1 of 6 (vgg16) · features 3/10 · ETA")
    finally:
        HOLD.set()
    assert registry().wait(job.id, timeout=JOB_TIMEOUT).state == "completed"
    [call] = calls
    assert call["names"] == list(NAMES) and call["config"].weights == "none" and call["config"].image_size == 96
    at.run()
    assert_clean(at)
    assert any(s.startswith("Compared 6 backbones in") for s in texts(at.success))
    [table] = [f.value for f in at.dataframe if "validation accuracy" in f.value]
    assert list(table["backbone"])[:2] == ["convnext_tiny", "mobilenet_v3_small"]  # most accurate first
    spec = json.dumps(next(s for s in vega_specs(at) if "Validation accuracy against model size" in json.dumps(s)))
    assert '"type": "log"' in spec and "latency" in spec
    recommendation = next(m for m in texts(at.markdown) if m.startswith("**Recommended: mobilenet_v3_small.**"))
    assert "0.5 points below convnext_tiny at 1/29 of the size and 30× faster" in recommendation
    assert at.selectbox(key="cfg_backbone").value == "vgg16"
    button(at, "Use mobilenet_v3_small").click().run()
    assert_clean(at)
    assert at.selectbox(key="cfg_backbone").value == "mobilenet_v3_small"
    assert button(at, "Use mobilenet_v3_small").disabled  # the form holds it now

    # A reload or a new tab finds the bake-off again from the address.
    again = open_app("pages/train.py", query={"dataset": ds.id, "bakeoff": job.id})
    assert any(m.startswith("**Recommended: mobilenet_v3_small.**") for m in texts(again.markdown))
    assert [f for f in again.dataframe if "validation accuracy" in f.value]


def test_stop_shows_stopping_at_once_and_the_backbones_done_stay(tmp_path, fast_bakeoff):
    from core.jobs.registry import registry

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    at.radio(key="cfg_weights").set_value("none").run()
    at.multiselect(key="bakeoff_backbones").set_value(["mobilenet_v3_small", "resnet50"]).run()
    HOLD_FOR.add("resnet50")
    HOLD.clear()
    try:
        button(at, "Compare backbones").click().run()
        job_id = at.session_state["bakeoff_job"]
        wait_for(lambda: "Backbone 2 of 2 (resnet50) · features 3/10" in progress_text(at), at)
        assert any(c.startswith("Done: mobilenet_v3_small 90.5%, 3.8 MB, 2.0 ms") for c in texts(at.caption))
        button(at, "Stop").click().run()
        assert_clean(at)
        assert button(at, "Stopping…").disabled
        assert any(w.startswith("Stopping… the bake-off ends within one batch") for w in texts(at.warning))
    finally:
        HOLD.set()
    assert registry().wait(job_id, timeout=JOB_TIMEOUT).state == "stopped"
    at.run()
    assert_clean(at)
    assert any(w.startswith("Stopped after 1 backbone of 2") for w in texts(at.warning))
    assert any("Of the backbones done before the stop" in m for m in texts(at.markdown))
