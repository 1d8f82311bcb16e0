"""The Train page's newer views through AppTest: augmentation preview and estimate, the speed probe it waits for, the
LR finder, two phases."""

from __future__ import annotations

import json
import time

import pytest
from pagetest import JOB_TIMEOUT, assert_clean, button, load, open_app, texts


def vega_specs(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def test_augmentation_shows_a_preview_grid_and_the_time_it_costs(tmp_path):
    from core.train.pace import record_speed

    record_speed(32, "float32", 50.0)
    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    at.selectbox(key="cfg_precision").set_value("float32")
    assert not at.get("image")  # no augmentation, no preview
    assert not [w for w in texts(at.warning) if "Augmentation" in w]
    at.radio(key="cfg_weights").set_value("none")
    at.slider(key="cfg_image_size").set_value(32)
    at.checkbox(key="cfg_augment_flip").check()
    at.slider(key="cfg_augment_rotation").set_value(30.0)
    at.run()
    assert_clean(at)
    grid = at.get("image")
    assert len(grid) == 1 and len(grid[0].proto.imgs) == 9  # the original and 8 variants
    assert grid[0].proto.imgs[0].caption == "original"
    first = [img.url for img in grid[0].proto.imgs]
    warning = next(w for w in texts(at.warning) if "Augmentation changes every image" in w)
    assert "trains end to end, about" in warning and "images/s through VGG16 at 32 px" in warning
    assert "Without augmentation: about" in warning

    button(at, "Another image").click().run()
    assert_clean(at)
    assert [img.url for img in at.get("image")[0].proto.imgs] != first


def test_the_estimate_waits_for_the_speed_probe_job_with_its_progress(tmp_path, monkeypatch, fast_training,
                                                                       speed_probe):  # fmt: skip
    from pagetest import PROBE_HOLD, PROBE_SPEED

    from core.config import TrainConfig
    from core.jobs.kinds import SPEED
    from core.jobs.registry import registry
    from core.jobs.states import COMPLETED
    from core.train.pace import record_precision, record_speed
    from core.train.speedtest import probe_batches

    def probes() -> list:
        return [j for j in registry().jobs() if j.kind == SPEED]

    def wait_for(ready) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not ready():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    monkeypatch.setattr(registry(), "max_running", 1)
    record_precision("auto", "float32")
    record_speed(224, "float32", 4.0)  # the form's first size is measured: the only probe is the one at 48 px below
    ds = load(tmp_path)
    training = registry().submit(ds, TrainConfig(weights="none", image_size=32, epochs=1000), name="running")
    PROBE_HOLD.clear()
    try:
        wait_for(lambda: registry().get(training.id, points=False).running)
        at = open_app("pages/train.py", dataset=ds.id)
        at.radio(key="cfg_weights").set_value("none")
        at.slider(key="cfg_image_size").set_value(48).run()
        assert_clean(at)
        # The probe is a job: it waits for the running training instead of competing with it for the cores.
        assert "Measuring this server's speed at 48 px for a time estimate: queued behind 1 job." in texts(at.caption)
        [job] = probes()
        assert job.params == {"image_size": 48, "precision": "auto"} and job.dataset_id is None
        jobs = open_app("pages/jobs.py")
        assert f"**Speed test** `{job.id}` · 48 px, auto · a guest · queued" in texts(jobs.markdown)
        assert "Queued: 1 job ahead." in texts(jobs.caption)

        registry().stop(training.id)
        wait_for(lambda: registry().get(job.id, points=False).done >= 3)
        at.run()
        assert_clean(at)
        waiting = [c for c in texts(at.caption) if c.startswith("Measuring this server's speed at 48 px")]
        assert len(waiting) == 1, texts(at.caption)
        assert waiting[0].startswith(
            f"Measuring this server's speed at 48 px for a time estimate: 3 of {probe_batches()} batches, about "
        ) and waiting[0].endswith(" left.")
        assert not [i for i in texts(at.info) if i.startswith("Estimated time")]
        assert [j.id for j in probes()] == [job.id]  # the page's reruns queued no second probe
        home = open_app()
        assert [link.proto.label for link in home.sidebar.get("page_link")] == ["1 job running"]
    finally:
        PROBE_HOLD.set()
        registry().stop(training.id)
    assert registry().wait(job.id, timeout=JOB_TIMEOUT).state == COMPLETED
    at.run()
    assert_clean(at)
    estimate = next(i for i in texts(at.info) if i.startswith("Estimated time: about"))
    assert f"this server: {PROBE_SPEED:.1f} images/s through VGG16 at 48 px" in estimate
    assert not [c for c in texts(at.caption) if c.startswith("Measuring")]


def test_learning_rate_finder_charts_the_test_and_fills_in_its_suggestion(tmp_path, fast_training):
    at = open_app("pages/train.py", dataset=load(tmp_path, per_class=8).id)
    at.radio(key="cfg_weights").set_value("none").run()
    button(at, "Use settings for random weights").click().run()  # every layer trains: a curve with a clear fall
    at.slider(key="cfg_image_size").set_value(32)
    at.number_input(key="cfg_batch_size").set_value(8)
    at.run()
    button(at, "Find a learning rate").click().run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    # The test runs as a job, not in the page's script run.
    from core.jobs.kinds import LR_FIND
    from core.jobs.registry import registry

    job = [j for j in registry().jobs() if j.kind == LR_FIND][-1]
    registry().wait(job.id, timeout=JOB_TIMEOUT)
    at.run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    spec = next(s for s in vega_specs(at) if "Loss as the learning rate grows" in json.dumps(s))
    assert '"type": "log"' in json.dumps(spec)
    finding = at.session_state["lr_finding"]
    assert finding["optimizer"] == "adam" and finding["path"] == "end to end"
    assert finding["suggestion"] is not None, finding["reason"]
    suggested = float(f"{finding['suggestion']:.2g}")
    assert any(m.startswith(f"**Suggested learning rate: {suggested:.2g}**") for m in texts(at.markdown))

    button(at, f"Use {suggested:.2g} as the adam learning rate").click().run()
    assert_clean(at)
    assert at.number_input(key="cfg_learning_rate_adam").value == pytest.approx(suggested)
    # And training starts from it.
    at.number_input(key="cfg_epochs").set_value(1).run()
    button(at, "Start training").click().run()
    from core.jobs.registry import registry

    job = registry().get(at.query_params["job"])
    assert job.config.learning_rate == pytest.approx(suggested)
    registry().stop(job.id)
    registry().wait(job.id, timeout=JOB_TIMEOUT)


def test_two_phase_preset_sets_phase_two_and_marks_it_on_the_charts(tmp_path, fast_training):
    from core.config import min_fine_tune_unfreeze
    from core.jobs.registry import registry
    from core.jobs.states import COMPLETED

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    at.radio(key="cfg_weights").set_value("none")
    at.selectbox(key="cfg_head").set_value("gap")
    at.slider(key="cfg_image_size").set_value(32)
    at.run()
    assert not [n for n in at.number_input if n.key == "cfg_fine_tune_epochs"]
    at.toggle(key="cfg_two_phase").set_value(True).run()
    assert_clean(at)
    assert at.slider(key="cfg_unfreeze").value >= min_fine_tune_unfreeze("gap") + 2  # the last block
    assert any("Phase 1 trains the gap head's 3 layers alone" in c for c in texts(at.caption))
    at.number_input(key="cfg_epochs").set_value(1)
    at.number_input(key="cfg_fine_tune_epochs").set_value(1)
    at.run()
    assert any("Phase 2 learning rate: 0.001" in c for c in texts(at.caption))  # SGD 0.01 / 10
    button(at, "Start training").click().run()
    assert_clean(at)
    job = registry().wait(at.query_params["job"], timeout=JOB_TIMEOUT)
    assert job.state == COMPLETED, job.error
    assert (job.config.fine_tune_epochs, job.config.epochs) == (1, 1)
    at.run()
    assert_clean(at)
    specs = [json.dumps(s) for s in vega_specs(at) if "per epoch" in json.dumps(s)]
    assert len(specs) == 2
    for spec in specs:
        assert '"rule"' in spec and '"text"' in spec, "no phase-2 marker"


def test_the_form_keeps_its_settings_through_a_run_and_other_pages(tmp_path, fast_training):
    from core.jobs.registry import registry
    from core.jobs.states import COMPLETED

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    at.radio(key="cfg_weights").set_value("none")
    at.selectbox(key="cfg_head").set_value("gap")
    at.slider(key="cfg_image_size").set_value(32)
    at.selectbox(key="cfg_optimizer").set_value("adam")
    at.run()
    at.number_input(key="cfg_learning_rate_adam").set_value(0.003)
    at.number_input(key="cfg_batch_size").set_value(8)
    at.number_input(key="cfg_epochs").set_value(1)
    at.checkbox(key="cfg_augment_flip").check()
    at.run()
    expected = {
        "cfg_weights": "none",
        "cfg_head": "gap",
        "cfg_image_size": 32,
        "cfg_optimizer": "adam",
        "cfg_learning_rate_adam": 0.003,
        "cfg_batch_size": 8,
        "cfg_epochs": 1,
        "cfg_augment_flip": True,
    }

    def form() -> dict:
        return {name: at.session_state[name] for name in expected}

    assert form() == expected
    at.switch_page("pages/classify.py").run()
    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/train.py").run()
    assert_clean(at)
    assert form() == expected
    assert at.slider(key="cfg_image_size").value == 32 and at.selectbox(key="cfg_head").value == "gap"

    button(at, "Start training").click().run()
    job = registry().wait(at.query_params["job"], timeout=JOB_TIMEOUT)
    assert job.state == COMPLETED, job.error
    at.run()  # the finished view: no form on the page
    button(at, "Train another model").click().run()
    assert_clean(at)
    assert form() == expected
    assert at.number_input(key="cfg_batch_size").value == 8
    assert at.checkbox(key="cfg_augment_flip").value is True


def test_a_reload_or_a_new_tab_restores_the_form_as_left_for_that_dataset(tmp_path):
    ds = load(tmp_path)
    at = open_app("pages/train.py", query={"dataset": ds.id})
    at.radio(key="cfg_weights").set_value("none")
    at.selectbox(key="cfg_optimizer").set_value("adam")
    at.toggle(key="cfg_two_phase").set_value(True)
    at.run()
    at.number_input(key="cfg_learning_rate_adam").set_value(0.003)
    at.number_input(key="cfg_epochs").set_value(7)
    at.checkbox(key="cfg_augment_flip").check()
    at.run()
    assert_clean(at)
    left = {k: at.session_state[k] for k in at.session_state if k.startswith("cfg_")}

    again = open_app("pages/train.py", query={"dataset": ds.id})  # a new session: a reload, a new tab
    assert {k: again.session_state[k] for k in again.session_state if k.startswith("cfg_")} == left
    assert again.number_input(key="cfg_epochs").value == 7 and again.toggle(key="cfg_two_phase").value is True
    assert again.selectbox(key="cfg_optimizer").value == "adam"

    (tmp_path / "other").mkdir()
    other = load(tmp_path / "other", per_class=9)  # another dataset has a form of its own
    fresh = open_app("pages/train.py", query={"dataset": other.id})
    assert fresh.radio(key="cfg_weights").value == "imagenet" and fresh.number_input(key="cfg_epochs").value != 7


def test_an_imbalanced_dataset_gets_class_weights_suggested_until_they_are_chosen(tmp_path):
    from conftest import jpeg_bytes, make_zip

    from core.workspace.datasets import open_dataset, save_zip

    entries = {f"big/{i}.jpg": jpeg_bytes((200, 40, 40), seed=i) for i in range(30)}
    entries |= {f"small/{i}.jpg": jpeg_bytes((40, 40, 200), seed=100 + i) for i in range(5)}
    ds = open_dataset(save_zip(make_zip(tmp_path / "imbalanced.zip", entries)).id)
    at = open_app("pages/train.py", dataset=ds.id)
    advice = [m for m in texts(at.info) if "balanced class weights" in m]
    assert advice == [
        "'big' has 6× the images of 'small' (30 against 5): with balanced class weights, training does not lean "
        "toward the big class."
    ]
    at.selectbox(key="cfg_class_weight").set_value("balanced").run()
    assert_clean(at)
    assert not [m for m in texts(at.info) if "balanced class weights" in m]

    even = open_app("pages/train.py", dataset=load(tmp_path).id)  # 10 and 10: nothing to suggest
    assert not [m for m in texts(even.info) if "balanced class weights" in m]


def test_another_backbone_unfreezes_in_blocks_offers_no_vgg_fc_and_reaches_the_job(
    tmp_path, monkeypatch, fast_training
):
    import streamlit as st

    import core.model.vgg16
    from core.jobs.registry import registry
    from core.model import backbones

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    assert at.selectbox(key="cfg_backbone").value == "vgg16"  # the tutorial's, and the form's first choice
    at.selectbox(key="cfg_head").set_value("vgg-fc").run()
    monkeypatch.setattr(core.model.vgg16, "reachable", lambda *args, **kwargs: False)
    st.cache_data.clear()
    at.selectbox(key="cfg_backbone").set_value("mobilenet_v3_small").run()
    assert_clean(at)
    assert at.selectbox(key="cfg_head").value == "gap"  # vgg-fc is VGG16's own layers
    assert "vgg-fc" not in at.selectbox(key="cfg_head").options
    assert not [s for s in at.slider if s.key == "cfg_unfreeze"]
    blocks = at.slider(key="cfg_unfreeze_blocks")
    assert blocks.value == 0 and blocks.max == backbones.block_count("mobilenet_v3_small")
    assert "MobileNetV3 Small could not be downloaded" in at.error[0].value
    blocks.set_value(2).run()
    table = next(df.value for df in at.dataframe if "block" in df.value.columns)
    assert list(table.loc[table.trainable, "block"]) == backbones.unfrozen_blocks("mobilenet_v3_small", 2)
    at.radio(key="cfg_weights").set_value("none")
    at.slider(key="cfg_image_size").set_value(32)
    at.run()
    assert not at.error, texts(at.error)
    assert any("No time estimate for mobilenet_v3_small" in c for c in texts(at.caption))
    button(at, "Start training").click().run()
    assert_clean(at)
    job = registry().get(at.query_params["job"])
    assert (job.config.backbone, job.config.unfreeze_blocks, job.config.head) == ("mobilenet_v3_small", 2, "gap")
