"""Train: choose what to freeze, the optimizer and the epochs; watch the run live; stop it any time.

Training runs as a background job (core.jobs), so switching pages, clicking widgets or reloading the browser
never interrupts it; the job id in the address (``?job=...``) finds it again.
"""

import streamlit as st

from core import UserError
from core.jobs import COMPLETED, STOPPED, registry
from ui import session
from ui.job_view import finished_view, forget_job, live
from ui.session import CURRENT_JOB, DATASET, JOB_PARAM, SESSION_ID, run_exists
from ui.train_extras import augmentation_preview, lr_finder, time_estimate
from ui.train_form import train_form

session.page()
st.title("Train")

# The address finds the job after a reload or in a new tab; the session finds it after a visit to another page.
job_id = st.query_params.get(JOB_PARAM) or st.session_state.get(CURRENT_JOB)
job = registry().get(job_id) if job_id else None
if job_id and job is None:
    forget_job()
    st.info(f"The training run **{job_id}** is not running on this server any more; saved runs are on Runs.")
    st.page_link("pages/runs.py", label="Open Runs", icon=":material/history:")
elif job is not None:
    snap = job.snapshot()
    if snap.state in (COMPLETED, STOPPED) and not run_exists(job_id):
        forget_job()  # deleted on the Runs page since: nothing to show or classify any more
        st.info(f"The run **{job_id}** was deleted. Train a new model below.", icon=":material/delete:")
    else:
        st.query_params[JOB_PARAM] = job_id
        st.caption(f"Run `{job_id}` on **{snap.dataset}**")
        if snap.finished:
            finished_view(snap)
        else:
            live(job_id)
        st.stop()

ds = st.session_state.get(DATASET)
if ds is None:
    st.info("First choose a dataset: upload a zip or take the sample.", icon=":material/info:")
    st.page_link("pages/dataset.py", label="Go to Dataset", icon=":material/folder_zip:")
    st.stop()

st.caption(f"Dataset **{ds.report.source}**: {len(ds.classes)} classes, {ds.report.total:,} images")
config, unfrozen, problem = train_form(ds)
if config.augmented:
    augmentation_preview(ds, config)
if not problem:
    time_estimate(ds, config, unfrozen)
lr_finder(ds, config, problem)

st.divider()
if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=problem is not None):
    try:
        job = registry().submit(ds, config, owner=st.session_state[SESSION_ID])
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
    else:
        st.query_params[JOB_PARAM] = st.session_state[CURRENT_JOB] = job.id
        st.rerun()
