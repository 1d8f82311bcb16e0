"""A training job on the page: live progress and charts while it runs, the result once it has finished.

live(job_id)                 # an st.fragment that redraws itself every second until the job finishes (reading
                             # only the chart points it has not seen yet)
finished_view(snap)          # metrics, links and Share, or the error; says so when the run was deleted since
stop_control(snap)           # Stop for whoever may: at once for the job this tab started, asked once otherwise

Everything drawn here is read from the workspace database, so any tab (and a colleague's) sees the same job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping
from typing import Any

import streamlit as st

from core.jobs.kinds import TRAIN
from core.jobs.registry import registry
from core.jobs.states import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FEATURES,
    INTERRUPTED,
    QUEUED,
    READING,
    SERVER_STOPPED,
    STARTING,
    STOPPED,
    JobSnapshot,
    thin,
)
from core.util.errors import UserError
from core.workspace import access
from core.workspace.runs import find_run
from ui import charts, session
from ui.session import CURRENT_JOB, DATASET_PARAM, JOB_PARAM, RUN_PARAM, duration, flash, guarded, plural, run_exists
from ui.share_views import share_panel

REFRESH_SECONDS = 1.0
POINTS = "live_job_points"  # session state: the chart points of the job on view, as read so far


def forget_job() -> None:
    st.query_params.pop(JOB_PARAM, None)
    st.session_state.pop(CURRENT_JOB, None)


def owner_name(owner: str) -> str:
    return access.display(owner)


def progress(snap: JobSnapshot) -> None:
    if snap.state == STARTING:
        st.info("Starting: preparing the model…", icon=":material/hourglass_top:")
    elif snap.state == QUEUED:
        ahead = registry().ahead(snap.id)
        text = (
            f"Waiting for the server: {plural(ahead, 'job')} ahead of yours. It starts by itself."
            if ahead
            else "Starting…"
        )
        st.info(text, icon=":material/hourglass_top:")
    elif snap.state in (READING, FEATURES):
        what = "Reading images" if snap.state == READING else "Running the frozen layers once per image"
        st.progress(
            snap.done / max(snap.total, 1), text=f"{what}: {snap.done:,}/{snap.total:,} · ETA {duration(snap.eta)}"
        )
    elif not snap.finished:
        text = (
            f"Epoch {snap.epoch}/{snap.epochs} · batch {snap.batch}/{snap.batches} · "
            f"elapsed {duration(snap.elapsed)} · ETA {duration(snap.eta)}"
        )
        st.progress(snap.done / max(snap.total, 1), text=text)


def charts_of(snap: JobSnapshot) -> None:
    if snap.epoch_logs:
        left, right = st.columns(2)
        p2 = snap.phase2_start
        left.altair_chart(charts.epoch_curves(snap.epoch_logs, "loss", "Loss per epoch", p2), width="stretch")
        right.altair_chart(charts.epoch_curves(snap.epoch_logs, "accuracy", "Accuracy per epoch", p2), width="stretch")
    if snap.batch_losses:
        st.altair_chart(charts.batch_loss(snap.batch_losses, snap.phase2_start), width="stretch")


def ask_stop(job_id: str) -> None:
    # a callback: the stop is recorded before the fragment redraws, so "Stopping…" shows at once
    try:
        registry().stop(job_id, session.user())
    except UserError as exc:
        session.flash(str(exc), error=True)


def stop_control(snap: JobSnapshot, key: str) -> None:
    """Stop for whoever may stop this job; nothing for others. The job this tab started stops at once; any
    other (a colleague's, one opened from a link) names itself and asks once."""
    if not access.may_change(session.user(), snap.owner):
        st.caption(f"Started by {session.escape(owner_name(snap.owner))}: only they or an admin may stop it.")
        return
    label = "Cancel" if snap.state == QUEUED else "Stop"
    if snap.stopping:
        st.button("Stopping…", icon=":material/stop_circle:", disabled=True, key=key)
    elif session.started_here(snap.id):
        st.button(label, icon=":material/stop_circle:", key=key, on_click=ask_stop, args=(snap.id,))
    else:
        with st.popover(label, icon=":material/stop_circle:"):
            st.markdown(
                f"{label} the {snap.label} **{snap.id}**"
                + (f" on {snap.dataset}" if snap.dataset else "")
                + f", started by {owner_name(snap.owner)}?"
                + (" The model trained so far is saved." if snap.kind == TRAIN and snap.state != QUEUED else "")
            )
            st.button(f"{label} it", type="primary", key=f"{key}_confirm", on_click=ask_stop, args=(snap.id,))


def with_new_points(job_id: str, seen: MutableMapping[str, Any]) -> JobSnapshot | None:
    """The job now, with all its chart points: those in ``seen`` (this session's, from earlier redraws) and the
    ones recorded since, the only ones read from the database."""
    points = seen.get(POINTS)
    if not points or points["id"] != job_id:
        points = seen[POINTS] = {"id": job_id, "seq": 0, "epoch": [], "batch": []}
    snap = registry().get(job_id, since=points["seq"])
    if snap is None:
        return None
    points["seq"] = snap.last_seq
    points["epoch"] = points["epoch"] + snap.epoch_logs
    points["batch"] = thin(points["batch"] + snap.batch_losses)  # the chart stays at most MAX_BATCH_POINTS
    return dataclasses.replace(snap, epoch_logs=points["epoch"], batch_losses=points["batch"])


@st.fragment(run_every=REFRESH_SECONDS)
@guarded
def live(job_id: str) -> None:
    snap = with_new_points(job_id, st.session_state)
    if snap is None or snap.finished:
        st.rerun()  # draw the final view once, without the timer
    if snap.path_reason:
        st.caption(snap.path_reason)
    if snap.stopping:
        st.warning(
            "Stopping… the run ends after the current batch and saves the model trained so far."
            if snap.state not in (QUEUED, STARTING, READING, FEATURES)
            else "Stopping… nothing is saved before training starts.",
            icon=":material/pause_circle:",
        )
    progress(snap)
    stop_control(snap, "stop_job")
    charts_of(snap)


def finished_view(snap: JobSnapshot) -> None:
    m = snap.metrics
    if snap.state in (COMPLETED, STOPPED) and not run_exists(snap.id):
        st.warning(
            f"The run **{snap.id}** was deleted from the Runs page; its model is gone.", icon=":material/delete:"
        )
    elif snap.state in (COMPLETED, STOPPED):
        if snap.state == STOPPED:
            st.warning(
                f"Stopped after {plural(m['epochs_completed'], 'full epoch')}; the model trained so far is saved.",
                icon=":material/pause_circle:",
            )
        else:
            st.success(f"Finished in {duration(m['seconds'])}; the model is saved.", icon=":material/check_circle:")
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Validation accuracy", f"{m['val_accuracy']:.1%}")
        c2.metric("Validation loss", f"{m['val_loss']:.4f}")
        c3.metric("Training accuracy", "–" if m["train_accuracy"] is None else f"{m['train_accuracy']:.1%}")
        c4.metric("Epochs", m["epochs_completed"])
        charts_of(snap)
        l1, l2 = st.columns(2)
        l1.page_link("pages/classify.py", label="Classify images with this model", icon=":material/image_search:",
                     query_params={RUN_PARAM: snap.id})  # fmt: skip
        l2.page_link("pages/evaluate.py", label="Evaluate it: confusion matrix and mistakes",
                     icon=":material/fact_check:", query_params={RUN_PARAM: snap.id})  # fmt: skip
        if (run := find_run(snap.id)) is not None:
            share_panel(run)
    elif snap.state == FAILED:
        session.error(snap.error, icon=":material/error:")
        if snap.kind == TRAIN and not snap.restarted_as:
            st.button("Try again", icon=":material/replay:", on_click=restart, args=(snap.id,),
                      key=f"restart_{snap.id}")  # fmt: skip
    elif snap.state == CANCELLED:
        st.info("Cancelled before it started; nothing was saved.")
    elif snap.state == INTERRUPTED:
        interrupted_view(snap)
    if st.button("Train another model", icon=":material/add:"):
        forget_job()
        if snap.dataset_id:
            st.query_params[DATASET_PARAM] = snap.dataset_id
        st.rerun()


def restart(job_id: str) -> None:
    try:
        new = registry().restart(job_id, session.user())
    except UserError as exc:
        flash(str(exc), error=True)
        return
    st.session_state[CURRENT_JOB] = new.id
    st.query_params[JOB_PARAM] = new.id
    session.started(new.id)


def interrupted_view(snap: JobSnapshot) -> None:
    """A job whose server stopped under it, or whose process was ended (a stop it did not take up, a death after
    its run was saved): what happened, what it had done, its run if it was saved whole, and a one-click restart."""
    done = len(snap.epoch_logs)
    if snap.error and snap.error != SERVER_STOPPED:
        st.warning(session.escape(snap.error), icon=":material/power_off:")
    else:
        st.warning(
            f"Interrupted: the server stopped while this {snap.label} ran"
            + (f", after {plural(done, 'whole epoch')} of {snap.epochs}" if snap.kind == TRAIN and done else "")
            + ". No model was saved; its progress up to then is below.",
            icon=":material/power_off:",
        )
    if snap.kind == TRAIN and run_exists(snap.id):
        st.page_link("pages/classify.py", label="Classify images with its saved model", icon=":material/image_search:",
                     query_params={RUN_PARAM: snap.id})  # fmt: skip
    if snap.restarted_as:
        st.page_link("pages/train.py", label=f"Restarted as {snap.restarted_as}", icon=":material/replay:",
                     query_params={JOB_PARAM: snap.restarted_as})  # fmt: skip
    else:
        st.button("Restart it", type="primary", icon=":material/replay:", on_click=restart, args=(snap.id,),
                  key=f"restart_{snap.id}")  # fmt: skip
    charts_of(snap)
