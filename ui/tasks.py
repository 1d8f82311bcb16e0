"""Heavy work a page asks for (the learning-rate test, an evaluation) as a job, drawn while it runs.

job_id = start(session_key, LR_FIND, {"config": config.to_dict()}, ds)   # remembered in the session
snap = follow(session_key)       # progress while it runs (a fragment); the finished snapshot once, then None
running(job_id)                  # the same progress for a job found otherwise (by its dataset, from the address)
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.data.dataset import Dataset
from core.jobs.registry import registry
from core.jobs.states import QUEUED, STARTING, JobSnapshot
from ui import session
from ui.job_view import stop_control
from ui.session import duration, guarded

STAGES = {
    "features": "Frozen layers, once per image",
    "reading": "Reading images",
    "testing": "Test run",
    "classifying": "Classifying the held-out images",
    "folds": "Out-of-fold predictions, fold by fold",
    "hashing": "Hashing images (once per dataset)",
    "comparing": "Comparing every pair of images",
}


def start(session_key: str, kind: str, params: dict[str, Any], dataset: Dataset | None = None) -> str:
    job = registry().submit_task(kind, params, owner=session.user(), dataset=dataset)
    st.session_state[session_key] = job.id
    session.started(job.id)
    return job.id


@st.fragment(run_every=1.0)
@guarded
def running(job_id: str) -> None:
    """A job's progress (counts, ETA) and its Stop, redrawn every second; the whole page reruns once it ends."""
    snap = registry().get(job_id, points=False)
    if snap is None or snap.finished:
        st.rerun()
    if snap.state == QUEUED:
        st.info("Waiting for a free slot on the server: it starts by itself.", icon=":material/hourglass_top:")
    elif snap.state == STARTING:
        st.info("Starting: a worker is getting ready (loading TensorFlow).", icon=":material/hourglass_top:")
    else:
        label = STAGES.get(snap.stage, snap.stage.capitalize() or "Starting")
        st.progress(
            snap.done / max(snap.total, 1), text=f"{label}: {snap.done:,}/{snap.total:,} · ETA {duration(snap.eta)}"
        )
    stop_control(snap, f"stop_{job_id}")


def follow(session_key: str) -> JobSnapshot | None:
    """Draw the session's task of this kind while it runs; return its snapshot once it has finished."""
    job_id = st.session_state.get(session_key)
    snap = registry().get(job_id, points=False) if job_id else None
    if snap is None:
        st.session_state.pop(session_key, None)
        return None
    if not snap.finished:
        running(job_id)
        return None
    st.session_state.pop(session_key, None)
    return snap
