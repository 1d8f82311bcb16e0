"""What the page tests share: opening the app through its router with AppTest, zips made here, small finders."""

from __future__ import annotations

import shutil
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
    "pages/runs.py": "Runs",
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
    from core.dataset import load_dataset

    return load_dataset(make_zip(tmp_path / "colours.zip", colour_entries(per_class)), tmp_path / "ds")


# ---------------------------------------------------------------------------------------------- a trained run


def copy_run(trained_run: Path, name: str | None = None, finished: str | None = None) -> Path:
    """A copy of the module's run in this test's runs folder (tests may delete theirs)."""
    from core.runs import MARKER, read_json, runs_dir, write_json

    target = runs_dir() / (name or trained_run.name)
    shutil.copytree(trained_run, target)
    if finished:
        write_json(target / MARKER, {**read_json(target / MARKER), "finished": finished})
    return target
