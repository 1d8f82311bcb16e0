"""Heavy work a page asks for (the learning-rate test, an evaluation) as a job, drawn while it runs.

job_id = start(session_key, LR_FIND, lr_find_task(ds, config))   # remembered in the session
snap = follow(session_key)       # progress while it runs (a fragment); the finished snapshot once, then None
"""

from __future__ import annotations

import streamlit as st

from core.jobs import QUEUED, JobSnapshot, Task, registry
from ui.session import SESSION_ID, duration

STAGES = {
    "features": "Frozen layers, once per image",
    "reading": "Reading images",
    "testing": "Test run",
    "classifying": "Classifying the held-out images",
}


def start(session_key: str, kind: str, task: Task) -> str:
    job = registry().submit_task(kind, task, owner=st.session_state.get(SESSION_ID, ""))
    st.session_state[session_key] = job.id
    return job.id


def _stop(job_id: str) -> None:
    registry().stop(job_id)


@st.fragment(run_every=1.0)
def _running(job_id: str) -> None:
    snap = registry().get(job_id).snapshot()
    if snap.finished:
        st.rerun()
    if snap.state == QUEUED:
        st.info("Waiting for a free slot on the server: it starts by itself.", icon=":material/hourglass_top:")
    else:
        label = STAGES.get(snap.stage, snap.stage.capitalize() or "Starting")
        st.progress(
            snap.done / max(snap.total, 1), text=f"{label}: {snap.done:,}/{snap.total:,} · ETA {duration(snap.eta)}"
        )
    st.button(
        "Stopping…" if snap.stopping else "Stop", icon=":material/stop_circle:", disabled=snap.stopping,
        on_click=_stop, args=(job_id,), key=f"stop_{job_id}",
    )  # fmt: skip


def follow(session_key: str) -> JobSnapshot | None:
    """Draw the session's task of this kind while it runs; return its snapshot once it has finished."""
    job_id = st.session_state.get(session_key)
    job = registry().get(job_id) if job_id else None
    if job is None:
        st.session_state.pop(session_key, None)
        return None
    snap = job.snapshot()
    if not snap.finished:
        _running(job_id)
        return None
    st.session_state.pop(session_key, None)
    return snap
