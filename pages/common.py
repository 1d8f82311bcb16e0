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
UPLOAD = "dataset_upload"
USE_SAMPLE = "use_sample"
# Query parameters
JOB_PARAM = "job"
RUN_PARAM = "run"


def init_session() -> None:
    if SESSION_ID not in st.session_state:
        st.session_state[SESSION_ID] = uuid.uuid4().hex
        workspace.prune()


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
