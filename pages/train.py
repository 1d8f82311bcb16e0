"""Train: choose what to freeze, the optimizer and the epochs; compare the backbones on the dataset (the bake-off);
watch the run live; stop it any time.

Training runs as a job (core.jobs.registry) recorded in the workspace database, so switching pages, clicking widgets,
reloading the browser or opening another tab never loses it; the job id in the address (``?job=...``) finds it
again, and the Jobs page lists every job on the server.
"""

import re

import streamlit as st

from core.jobs.registry import registry
from core.jobs.states import COMPLETED, STOPPED
from core.util.errors import UserError
from core.workspace.runs import find_run
from ui import session
from ui.bakeoff_views import bakeoff_section
from ui.job_view import finished_view, forget_job, live, owner_name
from ui.session import CURRENT_JOB, JOB_PARAM, SETTINGS_FROM, run_exists
from ui.train_extras import augmentation_preview, lr_finder, time_estimate
from ui.train_form import load_config, train_form

session.page()
st.title("Train")

# The address finds the job after a reload or in a new tab; the session finds it after a visit to another page.
job_id = st.query_params.get(JOB_PARAM) or st.session_state.get(CURRENT_JOB)
job = registry().get(job_id) if job_id else None
if job_id and job is None:
    forget_job()
    shown = f"**{job_id}**" if re.fullmatch(r"[\w.-]{1,100}", job_id) else "that the link names"  # no markdown
    st.error(
        f"There is no job {shown} on this server: the link is mistyped or the job was removed. "
        "Every job is on the Jobs page, and saved models on Runs.",
        icon=":material/link_off:",
    )
    st.page_link("pages/jobs.py", label="Open Jobs", icon=":material/work_history:")
elif job is not None:
    if job.state in (COMPLETED, STOPPED) and not run_exists(job_id):
        forget_job()  # deleted on the Runs page since: nothing to show or classify any more
        st.info(f"The run **{job_id}** was deleted. Train a new model below.", icon=":material/delete:")
    else:
        st.query_params[JOB_PARAM] = job_id
        mine = "" if session.started_here(job_id) else f", started by {owner_name(job.owner)}"
        st.caption(f"Run `{job_id}` on **{session.escape(job.dataset)}**{mine}")
        if job.finished:
            finished_view(job)
        else:
            live(job_id)
            if st.button("Set up another training", icon=":material/add:",
                         help="This one keeps running; the new one waits for a free slot on the server."):  # fmt: skip
                forget_job()  # the job goes on, and stays on the Jobs page
                st.rerun()
        st.stop()

ds = session.dataset()
if ds is None:
    st.info("First choose a dataset: upload a zip, pick a saved one, or take the sample.", icon=":material/info:")
    st.page_link("pages/dataset.py", label="Go to Dataset", icon=":material/folder_zip:")
    st.stop()

source = st.query_params.pop(SETTINGS_FROM, None)  # "Train again with these settings" on Runs
if source and (run := find_run(source)) is not None:
    load_config(run.config, ds.id)
    st.toast(f"The form holds the settings of {run.id}.", icon=":material/replay:")
st.caption(f"Dataset **{session.escape(ds.title)}**: {len(ds.classes)} classes, {ds.report.total:,} images")
config, unfrozen, problem = train_form(ds)
if config.augmented:
    augmentation_preview(ds, config)
if not problem:
    time_estimate(ds, config, unfrozen)
lr_finder(ds, config, problem)
bakeoff_section(ds, config)

st.divider()
if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=problem is not None):
    try:
        job = registry().submit(ds, config, owner=session.user())
    except UserError as exc:
        session.error(exc, icon=":material/error:")
    else:
        st.query_params[JOB_PARAM] = st.session_state[CURRENT_JOB] = job.id
        session.started(job.id)
        st.rerun()
