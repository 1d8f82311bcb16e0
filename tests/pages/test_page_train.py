"""The Train page through AppTest: the form, background training, stop, the queue."""

from __future__ import annotations

import shutil
import time

import pytest
from pagetest import JOB_TIMEOUT, STOP_HOLD, assert_clean, button, copy_run, load, metrics, open_app, texts
from streamlit.testing.v1 import AppTest


def test_train_without_dataset_says_so_and_stops():
    at = open_app("pages/train.py")
    assert "First choose a dataset" in at.info[0].value
    assert not [b for b in at.button if b.label == "Start training"]
    assert not at.slider
    assert [link.proto.label for link in at.get("page_link")] == ["Go to Dataset"]


def test_train_form_defaults_follow_the_tutorial(tmp_path):
    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    assert at.radio(key="cfg_weights").value == "imagenet"
    assert at.selectbox(key="cfg_head").value == "small-fc"
    assert at.radio(key="cfg_resize").value == "crop"
    assert at.slider(key="cfg_image_size").value == 224
    assert at.slider(key="cfg_unfreeze").value == 5
    assert at.selectbox(key="cfg_optimizer").value == "sgd"
    assert at.number_input(key="cfg_learning_rate_sgd").value == pytest.approx(0.01)
    assert at.number_input(key="cfg_momentum").value == pytest.approx(0.9)
    assert at.checkbox(key="cfg_nesterov").value is True
    assert at.number_input(key="cfg_batch_size").value == 64
    assert at.slider(key="cfg_validation_split").value == pytest.approx(0.1)
    assert at.number_input(key="cfg_epochs").value == 30
    assert "3 classes, 30 images" in at.caption[0].value
    assert int(metrics(at)["Trainable parameters"].replace(",", "")) > 0
    # Another optimizer brings its own learning rate and options.
    at.selectbox(key="cfg_optimizer").set_value("adamw").run()
    assert_clean(at)
    assert at.number_input(key="cfg_learning_rate_adamw").value == pytest.approx(0.001)
    assert at.number_input(key="cfg_weight_decay").value == pytest.approx(0.004)
    assert not [n for n in at.number_input if n.key == "cfg_momentum"]
    assert not [c for c in at.checkbox if c.key == "cfg_nesterov"]


def test_random_weights_preset_sets_a_configuration_that_learns(tmp_path):
    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    assert not [b for b in at.button if b.label == "Use settings for random weights"]  # ImageNet: no hint
    at.radio(key="cfg_weights").set_value("none").run()
    button(at, "Use settings for random weights").click().run()
    assert_clean(at)
    assert not at.get("alert") or all("default value" not in str(a.proto) for a in at.get("alert"))
    assert at.selectbox(key="cfg_head").value == "gap"
    assert at.slider(key="cfg_image_size").value == 64
    assert at.selectbox(key="cfg_optimizer").value == "adam"
    assert at.number_input(key="cfg_learning_rate_adam").value == pytest.approx(1e-4)
    assert at.number_input(key="cfg_batch_size").value == 16
    unfreeze = at.slider(key="cfg_unfreeze")
    assert unfreeze.value == unfreeze.max  # every layer trains
    assert metrics(at)["Frozen parameters"] == "0"


def start_training(at: AppTest, image_size: int = 32, epochs: int = 1) -> str:
    """Fill the Train form with a fast configuration, press Start training and return the job id."""
    at.radio(key="cfg_weights").set_value("none")
    at.slider(key="cfg_image_size").set_value(image_size)
    at.number_input(key="cfg_epochs").set_value(epochs)
    at.run()
    assert_clean(at)
    button(at, "Start training").click().run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    job_id = at.query_params.get("job")
    assert job_id, "Start training did not put the job in the address"
    return job_id


def test_training_runs_in_the_background_and_survives_page_reruns(tmp_path, fast_training):
    from core.jobs.registry import registry
    from core.jobs.states import COMPLETED
    from core.workspace.runs import list_runs, runs_dir

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    job_id = start_training(at, image_size=32, epochs=2)
    job = registry().get(job_id)
    assert job is not None
    assert (job.config.weights, job.config.image_size, job.config.epochs) == ("none", 32, 2)
    assert not any("-1" in text for text in texts(at.info)), texts(at.info)  # no negative queue position
    assert f"Run `{job_id}` on **colours.zip**" in texts(at.caption)

    # While it runs: rerun the live view; visit another page and come back through the menu (no ?job= in the
    # address): the session finds the job again.
    at.run()
    assert_clean(at)
    assert [b.label for b in at.button] in (
        ["Stop", "Set up another training"],
        ["Cancel", "Set up another training"],
        ["Train another model"],
        ["Share", "Train another model"],
    )
    at.switch_page("pages/classify.py").run()
    at.query_params.pop("job", None)
    at.switch_page("pages/train.py").run()
    assert_clean(at)
    assert at.query_params["job"] == job_id
    assert [b.label for b in at.button] in (
        ["Stop", "Set up another training"],
        ["Cancel", "Set up another training"],
        ["Train another model"],
        ["Share", "Train another model"],
    )
    # A session that forgot it (as a new tab would) gets the form while the job goes on, and can change widgets.
    del at.session_state["current_job"]
    del at.query_params["job"]
    at.run()
    button(at, "Start training")  # the form, while the job goes on
    at.selectbox(key="cfg_head").set_value("gap")
    at.slider(key="cfg_image_size").set_value(64)
    at.selectbox(key="cfg_optimizer").set_value("adam")
    at.number_input(key="cfg_epochs").set_value(5)
    at.run()
    assert_clean(at)
    at.switch_page("pages/dataset.py").run()
    at.switch_page("pages/train.py").run()
    assert_clean(at)

    job = registry().wait(job_id, timeout=JOB_TIMEOUT)
    assert job.state == COMPLETED, job.error
    assert (job.config.image_size, job.config.epochs, job.config.head) == (32, 2, "small-fc")

    at.query_params["job"] = job_id
    at.run()
    assert_clean(at)
    assert any("the model is saved" in s for s in texts(at.success))
    shown = metrics(at)
    assert shown["Epochs"] == "2"
    assert shown["Validation accuracy"].endswith("%")
    assert float(shown["Validation loss"]) > 0
    link = at.get("page_link")[0].proto
    assert link.label == "Classify images with this model" and link.query_string == f"run={job_id}"
    run_dir = runs_dir() / job_id
    assert (run_dir / "run.json").is_file() and (run_dir / "model.keras").is_file()
    assert [r["id"] for r in list_runs()] == [job_id]

    button(at, "Train another model").click().run()
    assert_clean(at)
    assert "job" not in at.query_params
    button(at, "Start training")  # back to the form


def test_stop_button_ends_the_run_and_keeps_the_model(tmp_path, fast_training):
    from core.jobs.registry import registry
    from core.jobs.states import FINISHED, STOPPED

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    job_id = start_training(at, image_size=32, epochs=500)  # far more than it will ever run
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (job := registry().get(job_id)).epoch_logs:  # a stop before the first whole epoch saves nothing
        assert job.state not in FINISHED, job.error
        assert time.monotonic() < deadline, "the job never trained an epoch"
        time.sleep(0.05)
    at.run()
    STOP_HOLD.clear()  # the stand-in keeps "finishing its batch" until the page has been looked at
    try:
        button(at, "Stop").click().run()
        assert_clean(at)
        assert registry().get(job_id).stop_asked
        # The click's own run says so, before the batch ends: the stop is set in the button's callback.
        assert at.button[0].label == "Stopping…" and at.button[0].disabled
        assert any(w.startswith("Stopping…") for w in texts(at.warning))
    finally:
        STOP_HOLD.set()
    job = registry().wait(job_id, timeout=JOB_TIMEOUT)
    assert job.state == STOPPED, job.error
    at.run()
    assert_clean(at)
    assert any("Stopped after" in w for w in texts(at.warning))
    assert 0 <= int(metrics(at)["Epochs"]) < 500  # whole epochs only: a stop mid-epoch does not count it
    assert (job.run_dir / "model.keras").is_file()


def test_second_run_waits_in_line_and_can_be_cancelled(tmp_path, monkeypatch, fast_training):
    from core.config import TrainConfig
    from core.jobs.registry import registry
    from core.jobs.states import CANCELLED

    monkeypatch.setattr(registry(), "max_running", 1)  # one training slot, whatever the environment says
    ds = load(tmp_path)
    first = registry().submit(ds, TrainConfig(weights="none", image_size=32, epochs=500), name="first")
    try:
        at = open_app("pages/train.py", dataset=ds.id)
        job_id = start_training(at)
        assert "1 job ahead of yours" in at.info[0].value
        button(at, "Cancel").click().run()
        assert_clean(at)
        job = registry().wait(job_id, timeout=JOB_TIMEOUT)
        assert job.state == CANCELLED
        at.run()
        assert "Cancelled before it started; nothing was saved." in texts(at.info)
        assert not (job.run_dir).exists()
    finally:
        registry().stop(first.id)
        registry().wait(first.id, timeout=JOB_TIMEOUT)


def test_unknown_job_id_points_to_runs_and_offers_the_form(tmp_path):
    at = open_app("pages/train.py", query={"job": "20990101-000000-nothing-0000"}, dataset=load(tmp_path).id)
    assert "There is no job **20990101-000000-nothing-0000** on this server" in at.error[0].value
    assert [link.proto.label for link in at.get("page_link")] == ["Open Jobs"]
    assert "job" not in at.query_params
    button(at, "Start training")  # the form, right below


def test_every_run_gets_a_time_estimate_before_it_starts(tmp_path, monkeypatch):
    import core.jobs.probes
    import core.train.pace

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    at.radio(key="cfg_weights").set_value("none").run()
    probes = []
    # A probe at 80 px ended without an answer lately: none is queued (the speed probe as a job, with its progress
    # while the page waits: test_page_train_more.py).
    monkeypatch.setattr(core.jobs.probes, "measure_in_background", lambda size, precision, **kw: probes.append(size))
    at.slider(key="cfg_image_size").set_value(80).run()
    assert_clean(at)
    assert probes == [80] and any(c.startswith("No time estimate") for c in texts(at.caption))
    core.train.pace.record_speed(48, "float32", 40.0)
    at.slider(key="cfg_image_size").set_value(48)
    at.selectbox(key="cfg_precision").set_value("float32").run()
    estimate = next(i for i in texts(at.info) if i.startswith("Estimated time: about"))
    assert "30 epochs of 27 training images" in estimate and "48 px" in estimate
    # Every layer trains: end to end, no augmentation; it gets an estimate too.
    button(at, "Use settings for random weights").click().run()
    at.selectbox(key="cfg_precision").set_value("float32")
    at.slider(key="cfg_image_size").set_value(48).run()
    assert any(i.startswith("Estimated time: about") for i in texts(at.info))


def test_offline_imagenet_says_so_in_words_and_offers_the_ways_out(tmp_path, monkeypatch):
    import streamlit as st

    import core.model.vgg16

    monkeypatch.setattr(core.model.vgg16, "reachable", lambda *args, **kwargs: False)
    st.cache_data.clear()
    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    assert_clean(at)
    message = at.error[0].value
    assert "could not be downloaded" in message
    assert "--weights" not in message and "/" not in message.replace("storage.googleapis.com", "")
    assert button(at, "Start training").disabled
    button(at, "Use random weights").click().run()
    assert_clean(at)
    assert at.radio(key="cfg_weights").value == "none"
    assert not at.error and not button(at, "Start training").disabled
    at.radio(key="cfg_weights").set_value("imagenet").run()
    button(at, "Upload a weights file").click().run()
    assert at.radio(key="cfg_weights").value == "file"
    assert [u.label for u in at.get("file_uploader")] == ["VGG16 weights (.h5)"]


def test_a_deleted_run_is_not_reopened_from_the_train_link(tmp_path, trained_run):
    from core.jobs.states import COMPLETED
    from core.workspace import db
    from core.workspace.runs import delete_run, runs_dir

    run = copy_run(trained_run, "20200202-000000-colours-dddd")
    ds = load(tmp_path)
    with db.connect(write=True) as con:  # a job this server finished, as it would be after a training
        con.execute(
            "INSERT INTO jobs (id, kind, state, owner, dataset_id, params, created, finished, metrics) "
            "VALUES (?, 'train', ?, '', ?, '{}', ?, ?, '{\"epochs_completed\": 1}')",
            (run.name, COMPLETED, ds.id, time.time() - 60, time.time()),
        )
    shutil.rmtree(runs_dir() / run.name)  # removed by hand: the job's row outlives its run
    at = open_app("pages/train.py", current_job=run.name, dataset=ds.id)
    assert_clean(at)
    assert f"The run **{run.name}** was deleted" in at.info[0].value
    assert "job" not in at.query_params and "current_job" not in at.session_state
    assert not [link for link in at.get("page_link") if "Classify" in link.proto.label]
    button(at, "Start training")  # the form

    again = copy_run(trained_run, "20200202-000000-colours-dddd")
    delete_run(again)  # deleted on the Runs page: its job goes with it
    at = open_app("pages/train.py", current_job=run.name, dataset=ds.id)
    assert_clean(at)
    assert f"There is no job **{run.name}** on this server" in at.error[0].value
    assert "current_job" not in at.session_state
    button(at, "Start training")


def test_random_weights_box_names_what_to_expect_and_goes_once_applied(tmp_path, caplog):
    import streamlit.elements.lib.policies as policies

    policies._shown_default_value_warning = False  # Streamlit warns once per process
    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    at.radio(key="cfg_weights").set_value("none").run()
    assert any("Expect lower accuracy" in m for m in texts(at.markdown))
    with caplog.at_level("WARNING"):
        button(at, "Use settings for random weights").click().run()
    assert_clean(at)
    assert not [r for r in caplog.records if "Session State API" in r.getMessage()]
    assert not [b for b in at.button if b.label == "Use settings for random weights"]
    assert any("Settings for random weights in use" in c for c in texts(at.caption))


def test_the_form_s_bounds_are_the_ones_validate_checks(tmp_path):
    from core.config import TrainConfig

    fields = {f.name: f.metadata for f in TrainConfig.describe()}
    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    at.radio(key="cfg_weights").set_value("none")
    at.toggle(key="cfg_two_phase").set_value(True).run()
    seen = set()
    for optimizer, backbone in (("sgd", "vgg16"), ("adamw", "vgg16"), ("sgd", "resnet50")):
        at.selectbox(key="cfg_optimizer").set_value(optimizer)
        at.selectbox(key="cfg_backbone").set_value(backbone).run()
        assert_clean(at)
        for w in [*at.slider, *at.number_input]:
            name = w.key.removeprefix("cfg_")
            name = "learning_rate" if name.startswith("learning_rate_") else name
            meta = fields[name]
            low = 1 if name == "fine_tune_epochs" else meta["min"]  # the switch on: phase 2 has at least 1 epoch
            assert w.min == low, name
            if name not in ("unfreeze", "unfreeze_blocks"):  # the model's depth
                assert w.max == meta["max"], name
            seen.add(name)
    bounded = {n for n, m in fields.items() if m["min"] is not None}
    assert seen == bounded, bounded - seen


def test_a_crafted_job_link_cannot_put_a_link_into_the_message(tmp_path):
    at = open_app("pages/train.py", query={"job": "[click](https://evil.example)"})
    assert at.error[0].value.startswith("There is no job that the link names on this server")
    assert "evil" not in at.error[0].value
