"""What the page tests share: opening the app through its router with AppTest, zips made here, small finders."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from conftest import class_entries, make_zip
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
    "pages/review.py": "Review",
    "pages/runs.py": "Runs",
    "pages/jobs.py": "Jobs",
}


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
    """The colour zip saved in this test's workspace (core.workspace.datasets), opened: a Dataset with its ``id``."""
    from core.workspace.datasets import open_dataset, save_zip

    return open_dataset(save_zip(make_zip(tmp_path / "colours.zip", colour_entries(per_class))).id)


# ---------------------------------------------------------------------------------------------- a trained run


def copy_run(trained_run: Path, name: str | None = None, finished: str | None = None) -> Path:
    """A copy of the module's run in this test's runs folder (tests may delete theirs)."""
    from core.workspace.runs import MARKER, read_json, runs_dir, write_json

    target = runs_dir() / (name or trained_run.name)
    shutil.copytree(trained_run, target)
    if finished:
        write_json(target / MARKER, {**read_json(target / MARKER), "finished": finished})
    return target


# ---------------------------------------------------------------------------------------------- fast stand-ins

# Page tests are about the page: the job machinery is real (registry, worker threads, events, stop), the training
# it runs is a stand-in that reports like core.train.training.train and saves a run folder the pages can read. Real
# training is tested in the core tests and, through the served app, in the browser test.
BATCH_SECONDS = 0.02
# A stopped stand-in waits for this before it saves, so a test can see the job while it is stopping (a real
# training takes the rest of its batch); set unless a test clears it.
STOP_HOLD = threading.Event()
STOP_HOLD.set()
# The speed probe's stand-in waits for this after 3 of its batches, so a test can see it half done; set unless a
# test clears it.
PROBE_HOLD = threading.Event()
PROBE_HOLD.set()
PROBE_SPEED = 40.0  # images/s the stand-in records


def fake_train(dataset, config, out_dir, listener=None, stop=None, cache=None, owner=""):
    from core.train.callbacks import Event
    from core.train.phases import phases
    from core.train.training import Result
    from core.util.errors import Cancelled
    from core.workspace import runs

    run_dir = runs.claim_dir(out_dir)
    batches, epoch, rows = 3, 0, []
    total = config.total_epochs * batches
    for phase in phases(config):
        listener(Event("training", "plan", 0, total, 0.0, None, epoch=epoch + 1, phase=phase.number,
                       message=f"Training the last {phase.unfreeze} layers (stand-in)."))  # fmt: skip
        for _ in range(phase.epochs):
            for batch in range(1, batches + 1):
                if stop.is_set():
                    break
                time.sleep(BATCH_SECONDS)
                done = epoch * batches + batch
                listener(Event("training", "batch", done, total, 0.1, 1.0, epoch + 1, config.total_epochs, batch,
                               batches, {"loss": 1.0 / done}, phase=phase.number))  # fmt: skip
            if stop.is_set():
                break
            epoch += 1
            logs = {"loss": 1 / epoch, "accuracy": 0.5, "val_loss": 1.1 / epoch, "val_accuracy": 0.5}
            rows.append({**logs, **({"phase": phase.number} if phase.number else {})})
            listener(Event("training", "epoch", epoch * batches, total, 0.1, 1.0, epoch, config.total_epochs,
                           batches, batches, logs, phase=phase.number))  # fmt: skip
    if stop.is_set():
        STOP_HOLD.wait(timeout=60)
    if not rows:
        shutil.rmtree(run_dir)
        raise Cancelled("Stopped before training started; nothing was saved.")
    status = "stopped" if stop.is_set() else "completed"
    metrics = {"val_accuracy": 0.5, "val_loss": 1.1 / epoch, "train_accuracy": 0.5, "train_loss": 1 / epoch,
               "epochs_completed": epoch, "seconds": 0.1, "path": "stand-in"}  # fmt: skip
    if config.two_phase and epoch > config.epochs:
        metrics["phase2_start_epoch"] = config.epochs + 1
    (run_dir / "model.keras").write_bytes(b"")
    runs.write_json(run_dir / "classes.json", dataset.classes)
    runs.write_json(run_dir / "config.json", config.to_dict())
    runs.write_json(run_dir / "metrics.json", metrics)
    marker = {"format": runs.RUN_FORMAT, "version": runs.RUN_VERSION, "status": status,
              "finished": "2024-01-01T00:00:00", "dataset": dataset.report.source, "val_accuracy": 0.5,
              "dataset_id": dataset.id, "owner": owner}  # fmt: skip
    runs.write_json(run_dir / runs.MARKER, marker)
    return Result(run_dir=run_dir, status=status, metrics=metrics, history=rows)


def fake_lr_find(dataset, config, progress=None, stop=None, **kwargs):
    """A range test's result without the test: a loss that falls, then diverges, and a suggestion of 1e-3."""
    from core.train.lrfind import LRFinding

    rates = [10 ** (-7 + 8 * i / 39) for i in range(40)]
    losses = [1.0 - 0.5 * i / 30 if i < 30 else 0.5 + (i - 30) for i in range(40)]
    for i in range(1, len(rates) + 1):
        progress("testing", i, len(rates))
    return LRFinding(rates, losses, losses, 1e-3, "where the smoothed loss falls fastest", "end to end", 0.1,
                     config.optimizer)  # fmt: skip


def fake_measure_speed(image_size, precision, images=None, fit=True, progress=None, stop=None):
    """The speed probe without TensorFlow: its batches reported as core.train.speedtest.measure_speed reports them, a
    wait for PROBE_HOLD after the third, then PROBE_SPEED recorded (``auto`` meaning float32)."""
    from core.train.pace import record_precision, record_speed
    from core.train.speedtest import STAGE, probe_batches
    from core.util.errors import Cancelled

    total = probe_batches(fit)
    for done in range(total + 1):
        if stop is not None and stop.is_set():
            raise Cancelled("The speed test was stopped; nothing was recorded.")
        progress(STAGE, done, total)
        if done == 3:
            while not PROBE_HOLD.wait(0.05) and not (stop is not None and stop.is_set()):
                pass
        time.sleep(BATCH_SECONDS)
    resolved = "float32" if precision == "auto" else precision
    record_precision(precision, resolved)
    record_speed(image_size, resolved, PROBE_SPEED)
    return PROBE_SPEED
