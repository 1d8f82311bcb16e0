"""Every job on the server, for the Jobs page and the sidebar: who started it, on what, how far, and Stop.

jobs_list()       # a fragment that redraws every few seconds: queued, running and recently finished jobs
sidebar_status()  # one line in the sidebar while something runs, linking to the Jobs page
"""

from __future__ import annotations

import socket
import time

import streamlit as st

from core.jobs.kinds import BAKEOFF, DUPLICATES, EVALUATE, EXPORT, LABEL_ISSUES, LR_FIND, SPEED, TRAIN
from core.jobs.registry import registry
from core.jobs.states import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    SERVER_STOPPED,
    STARTING,
    STOPPED,
    JobSnapshot,
)
from ui.job_view import owner_name, restart, stop_control
from ui.session import BAKEOFF_PARAM, DATASET_PARAM, JOB_PARAM, RUN_PARAM, duration, escape, guarded, plural

REFRESH_SECONDS = 2.0
HOST = socket.gethostname()
STATES = {
    QUEUED: "queued",
    STARTING: "starting",
    COMPLETED: "finished",
    STOPPED: "stopped, what was done is kept",
    FAILED: "failed",
    CANCELLED: "cancelled",
    INTERRUPTED: "interrupted",
}


def state_words(snap: JobSnapshot, default: str | None = None) -> str:
    """The state in words; a stopped training keeps its model, other stopped jobs what they had done."""
    if snap.kind == TRAIN and snap.state == STOPPED:
        return "stopped, model saved"
    return STATES.get(snap.state, snap.state if default is None else default)


def _when(ts: float | None) -> str:
    return time.strftime("%d %b %H:%M", time.localtime(ts)) if ts else "–"


def subject(snap: JobSnapshot) -> str:
    """What a job works on: its dataset, or for the speed probe (which needs none) the size it measures."""
    if snap.kind == SPEED:
        return f"{snap.params.get('image_size')} px, {snap.params.get('precision')}"
    return snap.dataset or "no dataset"


def _watch_link(snap: JobSnapshot) -> None:
    """Where to follow a job. The speed probe has no link: its progress here is all there is to watch, and the
    Train page uses its answer only while the form is at a size near the one it measures."""
    if snap.kind == TRAIN:
        st.page_link("pages/train.py", label="Watch" if not snap.finished else "Open", icon=":material/monitoring:",
                     query_params={JOB_PARAM: snap.id})  # fmt: skip
    elif snap.kind == LR_FIND and snap.dataset_id:
        st.page_link("pages/train.py", label="Open its dataset on Train", icon=":material/model_training:",
                     query_params={DATASET_PARAM: snap.dataset_id})  # fmt: skip
    elif snap.kind == BAKEOFF and snap.dataset_id:
        st.page_link("pages/train.py", label="Watch" if not snap.finished else "Open on Train",
                     icon=":material/leaderboard:",
                     query_params={DATASET_PARAM: snap.dataset_id, BAKEOFF_PARAM: snap.id})  # fmt: skip
    elif snap.kind == DUPLICATES and snap.dataset_id:
        st.page_link("pages/dataset.py", label="Open its dataset", icon=":material/content_copy:",
                     query_params={DATASET_PARAM: snap.dataset_id})  # fmt: skip
    elif snap.kind == EXPORT and snap.params.get("run"):
        st.page_link("pages/runs.py", label="Open the run on Runs", icon=":material/history:",
                     query_params={RUN_PARAM: snap.params["run"]})  # fmt: skip
    elif snap.kind in (EVALUATE, LABEL_ISSUES) and snap.params.get("run"):
        st.page_link("pages/evaluate.py", label="Open the run on Evaluate", icon=":material/fact_check:",
                     query_params={RUN_PARAM: snap.params["run"]})  # fmt: skip


def _progress(snap: JobSnapshot) -> None:
    if snap.state == QUEUED:
        ahead = registry().ahead(snap.id)
        st.caption(f"Queued: {plural(ahead, 'job')} ahead." if ahead else "Queued: starts next.")
    elif snap.state == STARTING:
        st.caption("Starting: preparing the model…")
    elif snap.finished:
        what = state_words(snap)
        if snap.kind == TRAIN and snap.metrics.get("val_accuracy") is not None:
            what += f" · val accuracy {snap.metrics['val_accuracy']:.1%}"
        elif snap.kind == SPEED and snap.metrics.get("images_per_second") is not None:
            what += f" · {snap.metrics['images_per_second']:.1f} images/s through VGG16"
        st.caption(f"{what.capitalize()} at {_when(snap.ended)} after {duration(snap.elapsed)}.")
        if snap.error and snap.error != SERVER_STOPPED:  # (that one the state says well enough)
            st.caption(f":red[{escape(snap.error)}]")
    else:
        if snap.kind == TRAIN and snap.epochs and snap.state == "training":
            text = f"Epoch {snap.epoch}/{snap.epochs} · batch {snap.batch}/{snap.batches}"
        else:
            text = f"{(snap.stage or snap.state).capitalize()}: {snap.done:,}/{snap.total:,}"
        st.progress(snap.done / max(snap.total, 1), text=f"{text} · ETA {duration(snap.eta)}")


def job_card(snap: JobSnapshot) -> None:
    with st.container(border=True, key=f"job_card_{snap.id}"):
        head, actions = st.columns([3, 1], vertical_alignment="center")
        state = "Stopping…" if snap.stopping else state_words(snap, "running")
        # Where it runs, when that is another machine (a Ray cluster's): the place to look if it misbehaves.
        where = f" · on {snap.machine}" if snap.machine and snap.machine != HOST else ""
        head.markdown(
            f"**{snap.label.capitalize()}** `{snap.id}` · {subject(snap)} · {owner_name(snap.owner)} · {state}{where}"
        )
        with head:
            _progress(snap)
        with actions:
            _watch_link(snap)
            if not snap.finished:
                stop_control(snap, f"jobs_stop_{snap.id}")
            elif snap.state in (INTERRUPTED, FAILED) and snap.kind == TRAIN and not snap.restarted_as:
                st.button("Restart it", icon=":material/replay:", key=f"jobs_restart_{snap.id}", on_click=restart,
                          args=(snap.id,))  # fmt: skip


@st.fragment(run_every=REFRESH_SECONDS)
@guarded
def jobs_list() -> None:
    jobs = registry().jobs()
    active = [j for j in jobs if not j.finished]
    done = [j for j in jobs if j.finished]
    if not jobs:
        st.info("No jobs in the last day. Start a training on the Train page; it shows here for everyone.",
                icon=":material/info:")  # fmt: skip
        return
    st.subheader(f"Running and queued ({len(active)})")
    if not active:
        st.caption("Nothing is running now.")
    for snap in reversed(active):  # in the order they run
        job_card(snap)
    if done:
        st.subheader(f"Finished in the last day ({len(done)})")
        for snap in done:
            job_card(snap)


@st.fragment(run_every=5.0)
@guarded
def sidebar_status() -> None:
    jobs = [j for j in registry().jobs(recent=0) if not j.finished]
    running = sum(j.state != QUEUED for j in jobs)
    if not jobs:
        return
    queued = len(jobs) - running
    if running:
        text = f"{plural(running, 'job')} running" + (f", {queued} queued" if queued else "")
    else:
        text = f"{plural(queued, 'job')} queued"
    st.page_link("pages/jobs.py", label=text, icon=":material/progress_activity:")
