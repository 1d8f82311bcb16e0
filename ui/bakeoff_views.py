"""The Train page's backbone bake-off: choose backbones, compare them as a job, read the table, the chart and the
recommendation, and put the recommended backbone into the form.

    bakeoff_section(ds, config)     # one call on the Train page, under the form

The bake-off runs as a job (``core.publish.bakeoff`` in a worker); its result is kept with the job, and its id in the
address (``?bakeoff=...``) finds it again after a reload, in a new tab or after a restart of the server.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.jobs.kinds import BAKEOFF
from core.jobs.registry import registry
from core.jobs.states import CANCELLED, FAILED, INTERRUPTED, QUEUED, STARTING, STOPPED, JobSnapshot
from core.model import backbones
from core.util.errors import UserError
from ui import charts, session
from ui.job_view import stop_control
from ui.session import BAKEOFF_PARAM, duration, guarded, plural
from ui.train_form import key

BAKEOFF_JOB = "bakeoff_job"  # session state: the bake-off on view
CHOICE = "bakeoff_backbones"  # widget keys
INT8 = "bakeoff_int8"
WEIGHT_WORDS = {"imagenet": "ImageNet", "none": "random"}


def use_backbone(name: str) -> None:
    st.session_state[key("backbone")] = name


def forget() -> None:
    st.query_params.pop(BAKEOFF_PARAM, None)
    st.session_state.pop(BAKEOFF_JOB, None)


def _start(ds: Dataset, config: TrainConfig) -> None:
    chosen = st.multiselect("Backbones to compare", list(backbones.NAMES), default=list(backbones.NAMES), key=CHOICE,
                            format_func=lambda n: backbones.get(n).title)  # fmt: skip
    int8 = st.checkbox(
        "Also score each one as a full-integer int8 LiteRT file (for phones: a quarter of the size; adds a "
        "conversion per backbone)",
        key=INT8,
    )
    why_not = None
    if config.weights not in WEIGHT_WORDS:
        why_not = "A weights file fits one backbone only: choose ImageNet or random weights above to compare them."
        st.caption(why_not)
    else:
        st.caption(
            f"Each with the form's {WEIGHT_WORDS[config.weights]} weights at {config.image_size} px ({config.resize}), "
            "frozen, with a gap head trained on its features (computed once per image and cached, as a training "
            "does) on the same training and validation images as a training; then its size and one image's latency "
            "are measured. A backbone whose weights cannot be had gets a row that says so."
        )
    if st.button("Compare backbones", icon=":material/leaderboard:", disabled=bool(why_not) or not chosen,
                 key="bakeoff_start"):  # fmt: skip
        try:
            params = {"config": config.to_dict(), "backbones": list(chosen), "int8": bool(int8)}
            job = registry().submit_task(BAKEOFF, params, owner=session.user(), dataset=ds)
        except UserError as exc:
            session.error(exc, icon=":material/error:")
            return
        st.query_params[BAKEOFF_PARAM] = st.session_state[BAKEOFF_JOB] = job.id
        session.started(job.id)
        st.rerun()  # draw its progress in place of the button


@st.fragment(run_every=1.0)
@guarded
def _live(job_id: str) -> None:
    snap = registry().get(job_id, points=False)
    if snap is None or snap.finished:
        st.rerun()  # the result, drawn once without the timer
    if snap.state == QUEUED:
        ahead = registry().ahead(job_id)
        st.info(f"Waiting for the server: {plural(ahead, 'job')} ahead. It starts by itself." if ahead
                else "Starting…", icon=":material/hourglass_top:")  # fmt: skip
    elif snap.state == STARTING or not snap.stage:
        st.info("Starting: a worker is getting ready (loading TensorFlow).", icon=":material/hourglass_top:")
    else:
        st.progress(snap.done / max(snap.total, 1),
                    text=f"{snap.stage[0].upper()}{snap.stage[1:]} {snap.done:,}/{snap.total:,} · "
                    f"ETA {duration(snap.eta)}")  # fmt: skip
    if snap.path_reason:
        st.caption(snap.path_reason)
    if snap.stopping:
        st.warning("Stopping… the bake-off ends within one batch and keeps the backbones done so far.",
                   icon=":material/pause_circle:")  # fmt: skip
    stop_control(snap, f"stop_{job_id}")


def table(rows: list[dict], int8: bool) -> None:
    shown = []
    for r in rows:
        row = {"backbone": r["backbone"], "validation accuracy": r["val_accuracy"]}
        if int8:
            row["int8 accuracy"] = r.get("int8_accuracy")
        row |= {"size (MB)": r["size_mb"], "parameters": r["params"], "latency (ms, 1 image)": r["latency_ms"],
                "note": r["error"] or r.get("int8_error") or ""}  # fmt: skip
        shown.append(row)
    st.dataframe(pd.DataFrame(shown), hide_index=True, width="stretch", column_config={
        "validation accuracy": st.column_config.NumberColumn(format="percent"),
        "int8 accuracy": st.column_config.NumberColumn(format="percent"),
        "size (MB)": st.column_config.NumberColumn(format="%.1f"),
        "parameters": st.column_config.NumberColumn(format="localized"),
        "latency (ms, 1 image)": st.column_config.NumberColumn(format="%.1f"),
    })  # fmt: skip


def result_view(snap: JobSnapshot, config: TrainConfig) -> None:
    """A finished bake-off: its table, chart and recommendation with "Use …", or why it has none."""
    if snap.state == FAILED:
        session.error(snap.error or "The bake-off failed.", icon=":material/error:")
        return
    if snap.state in (CANCELLED, INTERRUPTED) or not snap.result:
        st.info("This bake-off was cancelled or interrupted before it had a result.", icon=":material/info:")
        return
    result, rows = snap.result, snap.result.get("rows") or []
    where = (f"{result['train_images']:,} training and {result['val_images']:,} validation images of "
             f"{session.escape(result['dataset'])}, {result['image_size']} px, "
             f"{WEIGHT_WORDS.get(result['weights'], result['weights'])} weights")  # fmt: skip
    if snap.state == STOPPED:
        st.warning(f"Stopped after {plural(len(rows), 'backbone')} of {len(result['asked'])} ({where}).",
                   icon=":material/pause_circle:")  # fmt: skip
    else:
        st.success(f"Compared {plural(len(rows), 'backbone')} in {duration(result['seconds'])} on {where}.",
                   icon=":material/check_circle:")  # fmt: skip
    if not rows:
        return
    table(rows, bool(result.get("int8")))
    rec = result.get("recommendation")
    if any(r.get("val_accuracy") is not None for r in rows):
        st.altair_chart(charts.bakeoff(rows, rec["backbone"] if rec else None), width="stretch")
    if not rec:
        st.info("No backbone has a result, so there is no recommendation: see the notes above.", icon=":material/info:")
        return
    st.markdown(f"**Recommended: {session.escape(rec['backbone'])}.** {session.escape(rec['text'])}")
    st.caption(f"The rule: {rec['rule']}. Each head trained at most {result['settings'].get('epochs')} epochs on "
               "frozen features; a full training may rank them differently.")  # fmt: skip
    chosen = config.backbone == rec["backbone"]
    st.button(f"Use {rec['backbone']}", icon=":material/input:", on_click=use_backbone, args=(rec["backbone"],),
              disabled=chosen, key="bakeoff_use",
              help="The form above holds it already." if chosen else "Set the form's backbone to it.")  # fmt: skip


def bakeoff_section(ds: Dataset, config: TrainConfig) -> None:
    st.subheader("Compare backbones (bake-off)")
    job_id = st.query_params.get(BAKEOFF_PARAM) or st.session_state.get(BAKEOFF_JOB)
    snap = registry().get(job_id, points=False) if job_id else None
    if job_id and (snap is None or snap.kind != BAKEOFF):
        forget()
        st.warning("The bake-off that the address names is not on this server (mistyped, or removed with old jobs).",
                   icon=":material/link_off:")  # fmt: skip
        snap = None
    if snap is None:
        st.caption(
            "Which network suits these images? Each backbone trains a small head on its frozen features, and the "
            "table shows what each gives (validation accuracy) and costs (size, time for one image here), with a "
            "recommendation."
        )
        _start(ds, config)
        return
    st.query_params[BAKEOFF_PARAM] = st.session_state[BAKEOFF_JOB] = snap.id
    if snap.dataset and snap.dataset_id != ds.id:
        st.caption(f"On the dataset {session.escape(snap.dataset)}.")
    if not snap.finished:
        _live(snap.id)
        return
    result_view(snap, config)
    with st.expander("Compare again"):
        _start(ds, config)
