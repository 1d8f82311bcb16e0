"""What the pages share: session-state and widget keys, the session's work folder, progress text."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import streamlit as st

from core import workspace

# Session-state keys
SESSION_ID = "session_id"
DATASET = "dataset"
DATASET_KEY = "dataset_key"  # which upload the current dataset came from
WEIGHTS_FILE = "weights_file"
CURRENT_JOB = "current_job"  # the training job this session started last
# Widget keys
FORM_PREFIX = "cfg_"  # the Train form's widgets: kept across pages and job views
UPLOAD = "dataset_upload"
USE_SAMPLE = "use_sample"
# Query parameters
JOB_PARAM = "job"
RUN_PARAM = "run"


def run_app() -> None:
    """The router: page settings, the session, the menu, and the page the address names."""
    st.set_page_config(page_title="Image classifier maker", page_icon=":material/image_search:", layout="wide")
    init_session(router=True)
    st.navigation(
        [
            st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_zip:", default=True),
            st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
            st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
            st.Page("pages/classify.py", title="Classify", icon=":material/image_search:"),
            st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
        ]
    ).run()


def init_session(router: bool = False) -> None:
    """Call first on every page: gives the browser session its id, and runs a page that came without the router
    through it."""
    if not router:
        _through_router()
    # Streamlit forgets a widget's value after a run that does not draw it (another page, or the Train page
    # showing a job): writing the values back keeps the Train form as the user left it.
    for name in [k for k in st.session_state if isinstance(k, str) and k.startswith(FORM_PREFIX)]:
        st.session_state[name] = st.session_state[name]
    if SESSION_ID not in st.session_state:
        st.session_state[SESSION_ID] = uuid.uuid4().hex
        workspace.prune()


def _through_router() -> None:
    """Run the router when a page was started without it, then end the outer run.

    Until the first ``st.navigation`` call in the process, Streamlit treats a folder named ``pages/`` next to the
    entry point as the page list: a shared link opened first after a server start would run that one page alone,
    narrow, with every module of the folder in the menu. ``st.navigation`` clears the process-wide flag, so a page
    that finds it set did not come through ``run_app``; running the router here shows the real menu and the same
    page (the address names it), with this run's widget values.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        run_app()
        st.stop()


def session_dir() -> Path:
    init_session()
    return workspace.session_dir(st.session_state[SESSION_ID])


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


if __name__ == "__main__":  # opened as a page in the folder's page list: go to the app instead
    init_session()
