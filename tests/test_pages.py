"""The Streamlit pages through AppTest: the router, Dataset, Train (a real background job), Classify and Runs.

Everything is real: Streamlit's script runner, zips made here, VGG16 with random weights at 32 px for one epoch.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from conftest import COLORS, class_entries, jpeg_bytes, make_zip
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
SCRIPT_TIMEOUT = 300  # seconds per script run: generous, the machine may be shared; no test relies on speed
JOB_TIMEOUT = 900
CLASSES = ("red", "green", "blue")
PAGES = {
    "pages/dataset.py": "Dataset",
    "pages/train.py": "Train",
    "pages/evaluate.py": "Evaluate",
    "pages/classify.py": "Classify",
    "pages/runs.py": "Runs",
}


@pytest.fixture(autouse=True)
def work_dir(tmp_path, monkeypatch) -> Path:
    """Uploads and extracted datasets go to a temp folder, never into the checkout."""
    path = tmp_path / "work"
    monkeypatch.setenv("CLASSIFIER_WORK_DIR", str(path))
    return path


def zip_bytes(tmp_path: Path, entries: dict[str, bytes], name: str = "data.zip") -> bytes:
    return make_zip(tmp_path / name, entries).read_bytes()


def colour_entries(per_class: int = 10) -> dict[str, bytes]:
    return class_entries(classes=CLASSES, per_class=per_class)


def open_app(page: str | None = None, query: dict | None = None, **session) -> AppTest:
    """Run the app (router + first page), then optionally switch to ``page``; session state and query set first."""
    at = AppTest.from_file(APP, default_timeout=SCRIPT_TIMEOUT)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    assert_clean(at)
    if page:
        at.query_params.update(query or {})
        at.switch_page(page).run()
        assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return found[0]


def load(tmp_path: Path, per_class: int = 10):
    from core.dataset import load_dataset

    return load_dataset(make_zip(tmp_path / "colours.zip", colour_entries(per_class)), tmp_path / "ds")


# ---------------------------------------------------------------------------------------------- router


def test_router_opens_dataset_first_and_registers_the_five_pages():
    at = open_app()
    assert texts(at.title) == ["Dataset"]
    # Helper modules in pages/ are not pages: st.navigation registered only the five below.
    for helper in ("pages/common.py", "pages/charts.py"):
        with pytest.raises(ValueError, match="navigation page"):
            at.switch_page(helper)
    for path, title in PAGES.items():
        at.switch_page(path).run()
        assert_clean(at)
        assert texts(at.title) == [title], path


# ---------------------------------------------------------------------------------------------- Dataset


def test_dataset_page_starts_empty():
    at = open_app()
    assert "No dataset yet" in at.info[0].value
    assert "dataset" not in at.session_state
    assert not at.metric


def test_sample_button_loads_three_classes(work_dir):
    at = open_app()
    at.button(key="use_sample").click().run()
    assert_clean(at)
    ds = at.session_state["dataset"]
    assert ds.classes == ["circle", "square", "triangle"]
    assert metrics(at) == {"Classes": "3", "Images": "120", "Skipped files": "0", "Layout": "classes"}
    for cls in ds.classes:
        assert f"**{cls}**" in texts(at.markdown)
    assert len(at.image) == 3 * 6  # six thumbnails per class
    assert ds.root.is_relative_to(work_dir)
    assert [link.proto.label for link in at.get("page_link")] == ["Next: train a model"]


def test_uploaded_zip_is_read_once_and_keeps_its_name(tmp_path, work_dir):
    at = open_app()
    data = zip_bytes(tmp_path, colour_entries(), "colours.zip")
    at.file_uploader(key="dataset_upload").set_value(("My colours.zip", data, "application/zip")).run()
    assert_clean(at)
    ds = at.session_state["dataset"]
    assert sorted(ds.classes) == sorted(CLASSES)
    assert metrics(at)["Classes"] == "3"
    assert metrics(at)["Images"] == "30"
    assert "My_colours.zip" in texts(at.subheader)  # the user's file name, made file-name safe
    assert ds.root.is_relative_to(work_dir)
    # A rerun (any click) with the same upload does not read the zip again.
    at.run()
    assert at.session_state["dataset"] is ds


def test_skipped_files_are_listed(tmp_path):
    at = open_app()
    entries = {**colour_entries(per_class=4), "red/broken.jpg": b"not a jpeg at all"}
    at.file_uploader(key="dataset_upload").set_value(("c.zip", zip_bytes(tmp_path, entries), "application/zip")).run()
    assert_clean(at)
    assert metrics(at)["Skipped files"] == "1"
    assert [e.label for e in at.expander] == ["Skipped files (1)"]
    assert "broken.jpg" in at.dataframe[0].value.to_string()


def test_hostile_zip_shows_an_error_and_drops_the_dataset(tmp_path, work_dir):
    at = open_app()
    at.file_uploader(key="dataset_upload").set_value(
        ("good.zip", zip_bytes(tmp_path, colour_entries(), "good.zip"), "application/zip")
    ).run()
    assert "dataset" in at.session_state
    evil = {"red/0.jpg": jpeg_bytes(COLORS["red"]), "../evil.txt": b"gotcha"}
    at.file_uploader(key="dataset_upload").set_value(("evil.zip", zip_bytes(tmp_path, evil, "evil.zip"), "x")).run()
    assert_clean(at)  # an error message, not a traceback
    assert len(at.error) == 1
    assert "outside its folder" in at.error[0].value and "../evil.txt" in at.error[0].value
    assert "dataset" not in at.session_state
    assert "No dataset yet" in at.info[0].value
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (work_dir.parent / "evil.txt").exists()


# ---------------------------------------------------------------------------------------------- Train


def test_train_without_dataset_says_so_and_stops():
    at = open_app("pages/train.py")
    assert "First choose a dataset" in at.info[0].value
    assert not [b for b in at.button if b.label == "Start training"]
    assert not at.slider
    assert [link.proto.label for link in at.get("page_link")] == ["Go to Dataset"]


def test_train_form_defaults_follow_the_tutorial(tmp_path):
    at = open_app("pages/train.py", dataset=load(tmp_path))
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
    at = open_app("pages/train.py", dataset=load(tmp_path))
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


def test_training_runs_in_the_background_and_survives_page_reruns(tmp_path):
    from core.jobs import COMPLETED, registry
    from core.runs import list_runs, runs_dir

    at = open_app("pages/train.py", dataset=load(tmp_path))
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
    assert [b.label for b in at.button] in (["Stop"], ["Cancel"], ["Train another model"])
    at.switch_page("pages/classify.py").run()
    at.query_params.pop("job", None)
    at.switch_page("pages/train.py").run()
    assert_clean(at)
    assert at.query_params["job"] == job_id
    assert [b.label for b in at.button] in (["Stop"], ["Cancel"], ["Train another model"])
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


def test_stop_button_ends_the_run_and_keeps_the_model(tmp_path):
    from core.jobs import FINISHED, STOPPED, TRAINING, registry

    at = open_app("pages/train.py", dataset=load(tmp_path))
    job_id = start_training(at, image_size=32, epochs=500)  # far more than it will ever run
    job = registry().get(job_id)
    deadline = time.monotonic() + JOB_TIMEOUT
    while job.snapshot()["state"] != TRAINING:
        assert job.snapshot()["state"] not in FINISHED, job.error
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.2)
    at.run()
    button(at, "Stop").click().run()
    assert_clean(at)
    assert job.stop_event.is_set()
    job = registry().wait(job_id, timeout=JOB_TIMEOUT)
    assert job.state == STOPPED, job.error
    at.run()
    assert_clean(at)
    assert any("Stopped after" in w for w in texts(at.warning))
    assert 0 <= int(metrics(at)["Epochs"]) < 500  # whole epochs only: a stop mid-epoch does not count it
    assert (job.run_dir / "model.keras").is_file()


def test_second_run_waits_in_line_and_can_be_cancelled(tmp_path, monkeypatch):
    from core.config import TrainConfig
    from core.jobs import CANCELLED, registry

    monkeypatch.setattr(registry(), "max_running", 1)  # one training slot, whatever the environment says
    ds = load(tmp_path)
    first = registry().submit(ds, TrainConfig(weights="none", image_size=32, epochs=500), name="first")
    try:
        at = open_app("pages/train.py", dataset=ds)
        job_id = start_training(at)
        assert "1 training run(s) ahead of yours" in at.info[0].value
        button(at, "Cancel").click().run()
        assert_clean(at)
        job = registry().wait(job_id, timeout=JOB_TIMEOUT)
        assert job.state == CANCELLED
        at.run()
        assert "Cancelled before it started." in texts(at.info)
        assert not (job.run_dir).exists()
    finally:
        registry().stop(first.id)
        registry().wait(first.id, timeout=JOB_TIMEOUT)


def test_unknown_job_id_points_to_runs():
    at = open_app("pages/train.py", query={"job": "20990101-000000-nothing-0000"})
    assert "not running on this server" in at.info[0].value
    assert [link.proto.label for link in at.get("page_link")] == ["Open Runs"]
    button(at, "Train another model").click().run()
    assert "job" not in at.query_params


# ---------------------------------------------------------------------------------------------- Classify and Runs


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One real run (VGG16, random weights, 32 px, one epoch), trained once for the module."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(base / "keras"))
        from core.config import TrainConfig
        from core.dataset import load_dataset
        from core.training import train

        ds = load_dataset(make_zip(base / "colours.zip", colour_entries()), base / "work")
        config = TrainConfig(weights="none", image_size=32, epochs=1, batch_size=16)
        result = train(ds, config, base / "runs" / "20200101-000000-colours-abcd")
    assert result.status == "completed"
    return result.run_dir


def copy_run(trained_run: Path, name: str | None = None, finished: str | None = None) -> Path:
    """A copy of the module's run in this test's runs folder (tests may delete theirs)."""
    from core.runs import MARKER, read_json, runs_dir, write_json

    target = runs_dir() / (name or trained_run.name)
    shutil.copytree(trained_run, target)
    if finished:
        write_json(target / MARKER, {**read_json(target / MARKER), "finished": finished})
    return target


def test_classify_without_runs_says_so():
    at = open_app("pages/classify.py")
    assert "No saved model yet" in at.info[0].value
    assert not at.file_uploader


def test_classify_lists_the_run_and_ranks_uploaded_images(trained_run):
    run = copy_run(trained_run)
    at = open_app("pages/classify.py")
    model = at.selectbox[0]
    assert len(model.options) == 1 and model.options[0].startswith(f"{run.name} · ")
    assert model.value["id"] == run.name
    assert f"This model knows: {', '.join(sorted(CLASSES))}." in at.info[0].value

    images = [
        ("red.jpg", jpeg_bytes(COLORS["red"], seed=7), "image/jpeg"),
        ("notes.txt", b"this is not an image", "text/plain"),
    ]
    at.file_uploader[0].set_value(images).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["file"]) == ["red.jpg", "notes.txt"]
    assert table["class"][0] in CLASSES
    assert 1 / 3 <= table["probability"][0] <= 1  # the top class of three has at least a third
    assert table["note"][0] == "" and table["note"][1]
    assert [d.label for d in at.get("download_button")] == ["Download as CSV"]
    ranked = [m for m in texts(at.markdown) if m.startswith(f"**{table['class'][0]}** · ")]
    assert ranked and ranked[0].endswith("%")
    assert len(at.error) == 1 and "notes.txt" in at.error[0].value


def test_classify_selects_the_run_named_in_the_address(trained_run):
    older = copy_run(trained_run, "20190101-000000-older-0001", finished="2019-01-01T00:00:00")
    copy_run(trained_run)
    at = open_app("pages/classify.py", query={"run": older.name})
    assert at.selectbox[0].value["id"] == older.name
    at = open_app("pages/classify.py")
    assert at.selectbox[0].value["id"] == trained_run.name  # newest first by default


def test_runs_without_runs_says_so():
    at = open_app("pages/runs.py")
    assert "No saved runs yet" in at.info[0].value


def test_runs_page_lists_and_deletes_a_run(trained_run):
    run = copy_run(trained_run)
    at = open_app("pages/runs.py")
    table = at.dataframe[0].value
    assert list(table["id"]) == [run.name]
    assert table["classes"][0] == 3
    assert at.selectbox[0].value["id"] == run.name
    assert '"image_size": 32' in at.json[0].value  # the settings
    assert [d.label for d in at.get("download_button")] == ["Download run (.zip)"]
    links = {link.proto.label: link.proto.query_string for link in at.get("page_link")}
    assert links == {"Evaluate this run": f"run={run.name}", "Classify with this run": f"run={run.name}"}

    button(at, "Yes, delete it").click().run()
    assert_clean(at)
    assert not run.exists()
    assert "No saved runs yet" in at.info[0].value
