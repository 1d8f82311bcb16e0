"""Time estimates: every kind of run has its formula, speeds are measured at the size asked for, finished runs
correct later estimates, the module loads no TensorFlow, and the speed probe is a job that waits for a free slot
and is queued once per size."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, run_cli

from core.config import TrainConfig
from core.jobs import probes
from core.jobs.kinds import SPEED
from core.jobs.probes import measure_in_background, measuring, probe
from core.jobs.registry import JobRegistry
from core.jobs.states import CANCELLED, COMPLETED, QUEUED, THREAD
from core.model.vgg16 import layer_table, unfrozen_mask
from core.train import pace, speedtest
from core.train.cache import cache_dir
from core.train.estimates import (
    AUGMENT_SECONDS_PER_MEGAPIXEL,
    AUGMENTED,
    CONV_GMAC,
    DECODE_SECONDS,
    EPOCH_SECONDS,
    FIXED_SECONDS,
    FROZEN,
    MAX_CORRECTION,
    OPTIMIZER_SECONDS_PER_PARAM,
    SETUP_SECONDS,
    STEP_SECONDS,
    estimate,
    plan_phase,
    record_run_pace,
    run_phases,
)
from core.train.pace import FILE, fit_costs, known_speed, record_precision, record_speed
from core.train.phases import CACHED, END_TO_END
from core.train.speedtest import STAGE, measure_speed, probe_batches
from core.util.errors import Cancelled

TIMEOUT = 600  # seconds for a job: generous, the machine may be shared
COSTS = {"train_all": 4.0, "fit_forward": 1.0, "test": 0.5, "trace_train": 6.0, "trace_frozen": 1.0}
S5 = 3 * CONV_GMAC["block5_conv1"] / sum(CONV_GMAC.values())  # block 5's share of the convolutions' work


def measured(size: int, speed_: float = 10.0, precision: str = "float32", **costs) -> None:
    """A speed file as the probe leaves it: the forward speed and Keras fit's costs relative to it."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / FILE).write_text(
        json.dumps(
            {
                "forward": {f"{precision}/{size}": speed_},
                "fit": {f"{precision}/{size}": {**COSTS, **costs}},
            }
        )
    )


def params(head: str, size: int, names: list[str]) -> int:
    return sum(r["params"] for r in layer_table(head, size, 2) if r["name"] in names)


def per_step(head: str, size: int, names: list[str]) -> float:
    return STEP_SECONDS + OPTIMIZER_SECONDS_PER_PARAM * params(head, size, names)


def page_names(config: TrainConfig) -> list[str]:
    rows = layer_table(config.head, config.image_size, 2)
    return [r["name"] for r, m in zip(rows, unfrozen_mask(len(rows), config.unfreeze), strict=True) if m]


# ---------------------------------------------------------------------------------------------- the speed file


def test_a_speed_stands_for_sizes_near_it_only():
    assert known_speed(224, "float32") is None
    record_speed(224, "float32", 4.0)
    assert known_speed(224, "float32") == pytest.approx(4.0)
    assert known_speed(200, "float32") == pytest.approx(4.0 * (224 / 200) ** 2)  # close: scaled by pixel count
    assert known_speed(96, "float32") is None  # far: per-image overhead does not scale, so measure there
    assert known_speed(224, "bfloat16") is None  # another precision is another machine path
    data = json.loads((cache_dir() / FILE).read_text())
    assert data["forward"] == {"float32/224": 4.0}


def test_auto_is_found_without_tensorflow_once_a_measurement_resolved_it():
    record_speed(96, "bfloat16", 12.0)
    assert known_speed(96, "auto") is None  # nobody with TensorFlow has said what auto means here yet
    record_precision("auto", "bfloat16")
    assert known_speed(96, "auto") == pytest.approx(12.0)
    assert json.loads((cache_dir() / FILE).read_text())["auto"] == "bfloat16"


def test_old_unreadable_and_unwritable_speed_files():
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / FILE).write_text('{"float32/224": 4.0}')  # format 1
    assert known_speed(224, "float32") == pytest.approx(4.0)
    (cache_dir() / FILE).write_text("{not json")
    assert known_speed(224, "float32") is None
    record_speed(224, "float32", 2.5)
    assert known_speed(224, "float32") == pytest.approx(2.5)
    assert [p.name for p in cache_dir().iterdir() if p.name.startswith(f".{FILE}.") and "lock" not in p.name] == []


def test_a_cache_folder_that_cannot_be_written_fails_nothing(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CLASSIFIER_CACHE_DIR", str(tmp_path / "file" / "cache"))  # under a file: mkdir fails
    record_speed(224, "float32", 4.0)
    record_precision("auto", "float32")
    assert known_speed(224, "float32") is None
    assert fit_costs(224, "float32") == (pace.DEFAULT_FIT, False)


# ---------------------------------------------------------------------------------------------- paths and formulas


def test_cached_features_with_the_head_alone_training():
    measured(224)
    config = TrainConfig(weights="none", head="gap", unfreeze=3, epochs=30, batch_size=64, precision="float32")
    est = estimate(config, 90, 10, 10.0, page_names(config))
    assert est.path == CACHED and est.reason.startswith("Fast path: the first 21 layers")
    feature_pass = 100 * max(1 / 10.0, DECODE_SECONDS)  # every image through every convolution, once
    epochs = 30 * (EPOCH_SECONDS + 2 * per_step("gap", 224, ["predictions"]))  # the tail costs next to nothing
    setup = COSTS["trace_frozen"] + SETUP_SECONDS[CACHED]
    assert est.seconds == pytest.approx(feature_pass + setup + epochs + FIXED_SECONDS)
    assert est.cached_seconds == est.seconds and est.prepare_seconds == pytest.approx(feature_pass)
    assert "for 30 epochs of 90 training images (this server: 10.0 images/s through VGG16 at 224 px)" in est.text


def test_cached_features_with_the_last_block_training():
    measured(224)
    config = TrainConfig(weights="none", head="gap", unfreeze=7, epochs=4, batch_size=32, precision="float32")
    est = estimate(config, 90, 10, 10.0)  # the layers default to the last --unfreeze ones, as the page's table
    assert est.path == CACHED and "up to 'block4_pool'" in est.reason
    names = page_names(config)
    feature_pass = 100 * (1 - S5) / 10.0
    # Block 5 forward and back for training images, forward for validation ones, every epoch.
    epoch = (90 * COSTS["train_all"] * S5 + 10 * COSTS["test"] * S5) / 10.0 + EPOCH_SECONDS
    epoch += 3 * per_step("gap", 224, names)
    trace = S5 * COSTS["trace_train"] + COSTS["trace_frozen"] + SETUP_SECONDS[CACHED]
    final = 10 * COSTS["test"] * S5 / 10.0 + FIXED_SECONDS
    assert est.seconds == pytest.approx(feature_pass + trace + 4 * epoch + final)


def test_end_to_end_without_augmentation_when_no_layer_before_the_trainable_ones_is_frozen():
    measured(96)
    config = TrainConfig(weights="none", head="gap", image_size=96, unfreeze=100, optimizer="adam", epochs=2,
                         batch_size=16, precision="float32")  # fmt: skip
    est = estimate(config, 90, 10, 10.0, page_names(config))
    assert est.path == END_TO_END and est.reason == "Training end to end: no layer before the trainable ones is frozen."
    names = page_names(config)
    epoch = (90 * COSTS["train_all"] + 10 * COSTS["test"]) / 10.0 + EPOCH_SECONDS + 6 * per_step("gap", 96, names)
    trace = COSTS["trace_train"] + COSTS["trace_frozen"] + SETUP_SECONDS[END_TO_END]
    final = 10 * COSTS["test"] / 10.0 + FIXED_SECONDS
    assert est.seconds == pytest.approx(100 * DECODE_SECONDS + trace + 2 * epoch + final)
    assert est.cached_seconds == est.seconds  # nothing to cache: augmentation would not change the path


def test_end_to_end_with_augmentation_behind_frozen_convolutions():
    measured(96)
    config = TrainConfig(weights="none", image_size=96, epochs=2, augment_flip=True, precision="float32")
    est = estimate(config, 90, 10, 10.0, page_names(config))  # the tutorial's freeze: the small-fc head trains
    assert est.path == END_TO_END and est.reason.startswith("Training end to end: augmentation")
    names = page_names(config)
    # Frozen convolutions run forward only, at fit's pace, for every training image every epoch.
    epoch = (90 * COSTS["fit_forward"] + 10 * COSTS["test"]) / 10.0 + EPOCH_SECONDS
    epoch += math.ceil(90 / 64) * per_step("small-fc", 96, names) + 90 * AUGMENT_SECONDS_PER_MEGAPIXEL * 96**2 / 1e6
    final = 10 * COSTS["test"] / 10.0 + FIXED_SECONDS
    setup = COSTS["trace_frozen"] + SETUP_SECONDS[END_TO_END]
    assert est.seconds == pytest.approx(100 * DECODE_SECONDS + setup + 2 * epoch + final)
    plain = estimate(TrainConfig(weights="none", image_size=96, epochs=2, precision="float32"), 90, 10, 10.0)
    assert est.cached_seconds == pytest.approx(plain.seconds) and plain.path == CACHED
    assert plain.seconds < est.seconds


def test_two_phases_the_head_on_cached_features_then_every_layer_end_to_end():
    measured(96)
    config = TrainConfig(weights="none", head="gap", image_size=96, unfreeze=100, epochs=2, fine_tune_epochs=3,
                         batch_size=16, precision="float32")  # fmt: skip
    first, second = run_phases(config)
    assert (first.path, first.epochs, second.path, second.epochs) == (CACHED, 2, END_TO_END, 3)
    est = estimate(config, 90, 10, 10.0, page_names(config))
    assert est.path == END_TO_END
    names = page_names(config)
    phase1 = 100 / 10.0 + COSTS["trace_frozen"] + SETUP_SECONDS[CACHED]
    phase1 += 2 * (EPOCH_SECONDS + 6 * per_step("gap", 96, ["predictions"]))
    epoch2 = (90 * COSTS["train_all"] + 10 * COSTS["test"]) / 10.0 + EPOCH_SECONDS + 6 * per_step("gap", 96, names)
    phase2 = 100 * DECODE_SECONDS + COSTS["trace_train"] + COSTS["trace_frozen"] + SETUP_SECONDS[END_TO_END]
    phase2 += 3 * epoch2
    final = 10 * COSTS["test"] / 10.0 + FIXED_SECONDS
    assert est.seconds == pytest.approx(phase1 + phase2 + final)


def test_without_fit_costs_measured_at_any_size_the_defaults_apply():
    record_speed(64, "float32", 20.0)
    assert fit_costs(64, "float32") == (pace.DEFAULT_FIT, False)
    config = TrainConfig(weights="none", head="gap", image_size=64, unfreeze=100, epochs=1, precision="float32")
    assert estimate(config, 90, 10).speed == pytest.approx(20.0)  # the speed is looked up when not given
    with pytest.raises(ValueError, match="No speed measured near 224 px"):
        estimate(TrainConfig(weights="none", precision="float32"), 90, 10)


@pytest.mark.parametrize(
    ("head", "unfreeze", "augment"),
    [("gap", 3, False), ("gap", 7, False), ("gap", 100, False), ("small-fc", 1, False), ("small-fc", 5, True)],
)
def test_the_path_from_the_layer_table_is_the_path_training_takes(head, unfreeze, augment):
    from core.model.build import build_model
    from core.train.features import plan_training

    config = TrainConfig(weights="none", head=head, image_size=32, unfreeze=unfreeze, precision="float32")
    plan = plan_training(build_model(config, 2), augment=augment)
    static = plan_phase(layer_table(head, 32, 2), page_names(config), augment)
    assert (static.path == CACHED, static.reason) == (plan.cached, plan.reason)


# ---------------------------------------------------------------------------------------------- finished runs


def e2e_config(**changes) -> TrainConfig:
    base = dict(weights="none", head="gap", image_size=96, unfreeze=100, optimizer="adam", epochs=2, batch_size=16,
                precision="float32")  # fmt: skip
    return TrainConfig(**{**base, **changes})


def metrics_for(config: TrainConfig, fit_seconds: float, **extra) -> dict:
    return {"fit_seconds": fit_seconds, "train_images": 90, "val_images": 10, "precision": "float32",
            "epochs_completed": config.total_epochs, **extra}  # fmt: skip


def test_a_finished_run_corrects_later_estimates_of_its_kind():
    measured(96)
    config = e2e_config()
    before = estimate(config, 90, 10)
    names = page_names(config)
    epochs = 2 * (
        (90 * COSTS["train_all"] + 10 * COSTS["test"]) / 10.0 + EPOCH_SECONDS + 6 * per_step("gap", 96, names)
    )
    trace = COSTS["trace_train"] + COSTS["trace_frozen"] + SETUP_SECONDS[END_TO_END]
    record_run_pace(config, metrics_for(config, trace + 1.4 * epochs), "stopped")  # a stopped run tells nothing
    assert estimate(config, 90, 10).calibrated_runs == 0

    record_run_pace(config, metrics_for(config, trace + 1.4 * epochs))  # the epochs took 1.4 times the prediction
    after = estimate(config, 90, 10)
    assert after.seconds == pytest.approx(before.seconds + 0.4 * epochs)
    assert after.calibrated_runs == 1 and "corrected by 1 earlier run)" in after.text
    assert estimate(config, 90, 10, calibrate=False).seconds == pytest.approx(before.seconds)
    assert estimate(e2e_config(image_size=100), 90, 10, 10.0).calibrated_runs == 1  # a size near it
    assert estimate(e2e_config(augment_flip=True), 90, 10).calibrated_runs == 0  # another kind of run
    assert estimate(e2e_config(unfreeze=3), 90, 10).calibrated_runs == 0
    assert estimate(e2e_config(unfreeze=3, augment_flip=True), 90, 10).calibrated_runs == 0  # convolutions frozen

    record_run_pace(config, metrics_for(config, trace + epochs / 1.4))  # then faster: the average is in log space
    again = estimate(config, 90, 10)
    assert again.seconds == pytest.approx(before.seconds) and again.calibrated_runs == 2
    entry = json.loads((cache_dir() / FILE).read_text())["runs"][f"{END_TO_END}/float32/96"]
    assert entry["seconds_per_image_epoch"] == pytest.approx((trace + epochs / 1.4) / (2 * 100), rel=1e-3)


def test_runs_that_cannot_calibrate_record_nothing_but_what_auto_means():
    measured(96)
    short = e2e_config(unfreeze=3, epochs=1)  # cached head only: its fit is all fixed overhead
    record_run_pace(short, metrics_for(short, 30.0, path=CACHED))
    two = e2e_config(fine_tune_epochs=2)  # phase 1 on cached features, phase 2 end to end
    record_run_pace(two, metrics_for(two, 500.0, phases=[{"epochs_completed": 2}, {"epochs_completed": 2}]))
    auto = e2e_config(precision="auto")
    record_run_pace(auto, metrics_for(auto, 100.0, augmentation="flip"), "stopped")
    data = json.loads((cache_dir() / FILE).read_text())
    assert data["runs"] == {} and data["auto"] == "float32"
    assert known_speed(96, "auto") == pytest.approx(10.0)


def test_an_augmented_run_corrects_augmented_estimates():
    measured(96)
    config = e2e_config(augment_flip=True, augment_rotation=10.0)
    names = page_names(config)
    before = estimate(config, 90, 10)
    record_run_pace(config, metrics_for(config, 3 * before.fit_seconds))  # a busy server, not the model's error
    epoch = (90 * COSTS["train_all"] + 10 * COSTS["test"]) / 10.0 + EPOCH_SECONDS + 6 * per_step("gap", 96, names)
    epoch += 90 * AUGMENT_SECONDS_PER_MEGAPIXEL * 96**2 / 1e6
    assert estimate(config, 90, 10).seconds == pytest.approx(before.seconds + (MAX_CORRECTION - 1) * 2 * epoch)
    assert set(json.loads((cache_dir() / FILE).read_text())["runs"]) == {f"{AUGMENTED}/float32/96"}
    frozen = e2e_config(unfreeze=3, augment_flip=True)  # the head alone trains: a kind of its own
    assert estimate(frozen, 90, 10).calibrated_runs == 0
    record_run_pace(frozen, metrics_for(frozen, 100.0))
    assert set(json.loads((cache_dir() / FILE).read_text())["runs"]) == {
        f"{AUGMENTED}/float32/96",
        f"{AUGMENTED}{FROZEN}/float32/96",
    }


# ---------------------------------------------------------------------------------------------- measuring


def test_importing_and_estimating_loads_no_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "from core.config import TrainConfig\n"
        "from core.train import estimates, pace\n"
        "import core.jobs.probes\n"
        "pace.record_speed(64, 'float32', 5.0)\n"
        "pace.known_speed(64, 'auto')\n"
        "config = TrainConfig(weights='none', image_size=64, precision='float32', augment_flip=True)\n"
        "estimates.estimate(config, 90, 10)\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    env = {**os.environ, "CLASSIFIER_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_speed_command_measures_and_records(tmp_path):
    out = run_cli("speed", "--image-size", 32, "--precision", "float32", "--images", 2, env_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("float32 at 32 px: ") and "images/s through VGG16's convolutions" in out.stdout
    data = json.loads((tmp_path / "cache" / FILE).read_text())
    assert data["forward"]["float32/32"] > 0
    assert set(data["fit"]["float32/32"]) == set(pace.DEFAULT_FIT)
    bad = run_cli("speed", "--image-size", 8, env_dir=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--image-size" in bad.stderr


def test_the_probe_reports_every_batch_and_stops_between_them():
    stop, seen = threading.Event(), []

    def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        if done == 2:
            stop.set()

    with pytest.raises(Cancelled):
        measure_speed(32, "float32", images=2, progress=progress, stop=stop)
    assert seen == [(STAGE, 0, probe_batches()), (STAGE, 1, probe_batches()), (STAGE, 2, probe_batches())]
    assert known_speed(32, "float32") is None  # a stopped probe records nothing


# ---------------------------------------------------------------------------------------------- the probe as a job


@pytest.fixture
def new_registry():
    """Registries made by a test, on threads of this process, closed after it."""
    made = []

    def make(**kwargs) -> JobRegistry:
        made.append(JobRegistry(**{"executor": THREAD, **kwargs}))
        return made[-1]

    yield make
    for reg in made:
        reg.close()


def test_the_probe_is_a_job_that_records_a_speed_for_auto(new_registry):
    reg = new_registry(max_running=1)
    assert known_speed(32, "auto") is None and not measuring(32, "auto", reg)
    job = measure_in_background(32, "auto", owner="ann@example.com", images=2, registry=reg)
    assert job.kind == SPEED and job.label == "speed test" and job.owner == "ann@example.com"
    assert job.dataset_id is None  # synthetic images: no dataset needed
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    assert done.stage == STAGE and done.done == done.total == probe_batches()
    assert known_speed(32, "auto") == pytest.approx(done.metrics["images_per_second"])
    assert fit_costs(32, "auto")[1]  # the fit costs came with it
    assert not measuring(32, "auto", reg) and probe(32, "auto", reg) is None


def held_probe(hold: threading.Event, speeds: dict[int, float]):
    """A stand-in for measure_speed: its progress, a wait for ``hold`` (or a stop), then ``speeds[size]``
    recorded."""

    def measure(image_size, precision, images=None, fit=True, progress=None, stop=None):
        total = probe_batches(fit)
        progress(STAGE, 1, total)
        while not hold.wait(0.02):
            if stop.is_set():
                raise Cancelled("The speed test was stopped; nothing was recorded.")
        progress(STAGE, total, total)
        record_speed(image_size, precision, speeds[image_size])
        return speeds[image_size]

    return measure


def test_the_probe_waits_for_a_free_slot_and_is_queued_once(new_registry, monkeypatch):
    hold = threading.Event()
    monkeypatch.setattr(speedtest, "measure_speed", held_probe(hold, {224: 4.0, 32: 7.0}))
    reg = new_registry(max_running=1)
    other = measure_in_background(224, "float32", registry=reg)  # another job takes the only slot
    deadline = time.monotonic() + TIMEOUT
    while not reg.get(other.id, points=False).running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = measure_in_background(32, "float32", owner="ann@example.com", registry=reg)
    time.sleep(1.5)  # the dispatcher has looked since: the slot is taken
    assert reg.get(job.id, points=False).state == QUEUED and reg.ahead(job.id) == 1
    assert measuring(32, "float32", reg) and probe(32, "float32", reg).id == job.id
    assert measure_in_background(32, "float32", registry=reg).id == job.id  # asked again while queued
    assert measure_in_background(36, "float32", registry=reg).id == job.id  # near: its speed stands in
    assert probe(36, "float32", reg).id == job.id and probe(32, "bfloat16", reg) is None
    assert [j.id for j in reg.jobs() if j.kind == SPEED] == [job.id, other.id]
    hold.set()
    assert reg.wait(other.id, timeout=TIMEOUT).state == COMPLETED
    assert reg.wait(job.id, timeout=TIMEOUT).state == COMPLETED
    assert known_speed(32, "float32") == pytest.approx(7.0) and known_speed(224, "float32") == pytest.approx(4.0)
    assert len([j for j in reg.jobs() if j.kind == SPEED]) == 2


def test_a_probe_that_ended_without_a_speed_is_not_queued_again_at_once(new_registry, monkeypatch):
    hold = threading.Event()
    monkeypatch.setattr(speedtest, "measure_speed", held_probe(hold, {}))
    reg = new_registry(max_running=1)
    job = measure_in_background(64, "float32", registry=reg)
    reg.stop(job.id)  # from the Jobs page: cancelled while queued, or stopped between batches
    assert reg.wait(job.id, timeout=TIMEOUT).state == CANCELLED
    assert measure_in_background(64, "float32", registry=reg) is None  # the page says: no estimate just now
    assert not measuring(64, "float32", reg) and [j.id for j in reg.jobs() if j.kind == SPEED] == [job.id]
    monkeypatch.setattr(probes, "RETRY_AFTER", 0.0)
    again = measure_in_background(64, "float32", registry=reg)
    assert again is not None and again.id != job.id
    reg.stop(again.id)
    reg.wait(again.id, timeout=TIMEOUT)
