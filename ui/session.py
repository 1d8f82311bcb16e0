"""The browser session: keys of session state, widgets and the address; the start of every page; small helpers.

    session.start()          # in app.py, before st.navigation
    session.page()           # first line of every page script

Keys are named here once (session state, widgets, query parameters), so two pages never disagree on a name.
"""

from __future__ import annotations

import runpy
import time
import uuid
from pathlib import Path

import streamlit as st

from core import workspace
from core.runs import RunInfo, find_run

APP = Path(__file__).resolve().parent.parent / "app.py"

# Session-state keys
SESSION_ID = "session_id"
DATASET = "dataset"
DATASET_KEY = "dataset_key"  # which upload the current dataset came from
WEIGHTS_FILE = "weights_file"
CURRENT_JOB = "current_job"  # the training job this session started last
FLASH = "flash"  # a confirmation to show once on the next run ("Deleted run …")
# Widget keys
FORM_PREFIX = "cfg_"  # the Train form's widgets: kept across pages and job views
UPLOAD = "dataset_upload"
USE_SAMPLE = "use_sample"
# Query parameters
JOB_PARAM = "job"
RUN_PARAM = "run"

_routed = False  # whether app.py has run in this process (see page())


def start() -> None:
    """Called by the router on every run: gives the browser session its id."""
    global _routed
    _routed = True
    if SESSION_ID not in st.session_state:
        st.session_state[SESSION_ID] = uuid.uuid4().hex
        workspace.prune()


def page() -> None:
    """First call of every page script: make sure the page runs inside the router, then show a pending flash.

    Until the router's first ``st.navigation`` call in a server process, Streamlit takes a folder named ``pages/``
    beside the entry point for the page list: a shared link opened first after a server start would run that one
    page alone, narrow, with every script of the folder in the menu. Such a run runs the router instead (the
    address names the same page, which the router then runs), and ends.
    """
    if not _routed:
        runpy.run_path(str(APP))
        st.stop()
    if message := st.session_state.pop(FLASH, None):
        st.success(message, icon=":material/check_circle:")


def flash(message: str) -> None:
    """Show ``message`` at the top of the next run (a confirmation that outlives the rerun it causes)."""
    st.session_state[FLASH] = message


def session_dir() -> Path:
    return workspace.session_dir(st.session_state[SESSION_ID])


def wanted_run(runs: list[RunInfo], fallback: str | None = None) -> RunInfo | None:
    """The run the address names (``?run=``); an unknown id says so and offers the list instead.

    Returns the named run, else the ``fallback`` id's run, else the newest; None when there is no run.
    """
    wanted = st.query_params.get(RUN_PARAM)
    by_id = {r.id: r for r in runs}
    if wanted and wanted not in by_id:
        st.error(
            f"There is no saved run **{wanted}** on this server: it was deleted, or the link is mistyped. "
            "Pick one of the saved runs below.",
            icon=":material/link_off:",
        )
        st.query_params.pop(RUN_PARAM, None)
        wanted = None
    return by_id.get(wanted or fallback or "") or (runs[0] if runs else None)


def run_picker(runs: list[RunInfo], label: str = "Model", fallback: str | None = None) -> RunInfo:
    """A select box of the saved runs, starting at the one the address names; keeps the address in step."""
    first = wanted_run(runs, fallback)
    run = st.selectbox(label, runs, index=runs.index(first), format_func=run_label)
    st.query_params[RUN_PARAM] = run.id
    return run


def run_label(run: RunInfo) -> str:
    acc = f" · val acc {run.val_accuracy:.1%}" if run.val_accuracy is not None else ""
    return f"{run.id} · {run.dataset} · {plural(len(run.classes), 'class', 'classes')}{acc}"


def run_exists(run_id: str) -> bool:
    return find_run(run_id) is not None


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 epoch', '3 epochs', '1 class', '2 classes'."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = round(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class ProgressBar:
    """An ``st.progress`` fed by a core ``progress(done, total)`` callback, with counts and an ETA."""

    def __init__(self, label: str):
        self.label = label
        self.bar = st.progress(0.0, text=label)
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (total - done) if done else None
        self.bar.progress(
            min(done / max(total, 1), 1.0), text=f"{self.label}: {done:,}/{total:,} · ETA {duration(eta)}"
        )

    def empty(self) -> None:
        self.bar.empty()
