"""A saved dataset's versions on the pages: the Dataset page's list, the Runs page's "Train again on the newest
version" and the versions of compared runs.

versions_section(ds)         # Dataset: every version, newest first, with its new validation images
retrain_button(run)          # Runs: on a run whose saved dataset has a newer version than it trained on
compare_versions(runs)       # Runs, Compare: each run's dataset version, and what changed between two of them
"""

from __future__ import annotations

import itertools
import time

import pandas as pd
import streamlit as st

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.jobs.registry import registry
from core.util.errors import UserError
from core.workspace import access, records, versions
from core.workspace.runs import RunInfo
from ui import paging, session
from ui.session import CURRENT_JOB, JOB_PARAM, plural

RETRAIN = "retrain_newest"  # + the run's id
VERSIONS_PAGE = "versions_page"  # + the dataset's id: the page of its versions on view (ui.paging)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def new_validation_text(dataset_id: str, a: int, b: int, fraction: float) -> str:
    """ "3 validation images new since v1": what makes version b's validation accuracy differ from version a's."""
    n = versions.new_validation(dataset_id, a, b, fraction)
    return f"{plural(n, 'validation image')} new since v{a}"


def versions_section(ds: Dataset) -> None:
    """The saved dataset's versions, newest first: number, message, author, when, counts, new validation images."""
    if not ds.id:
        return
    try:
        found = versions.versions(ds.id)
    except UserError as exc:
        session.error(exc, icon=":material/error:")
        return
    st.subheader("Versions")
    fraction = TrainConfig().validation_split

    def row(v: versions.Version) -> dict:  # made for the shown page only: "new validation" compares two versions
        return {
            "version": f"v{v.number}",
            "message": v.message,
            "by": access.display(v.author),
            "when": _when(v.created),
            "images": len(v.entries),
            "per class": ", ".join(f"{c} {n:,}" for c, n in v.counts.items()),
            "new validation": new_validation_text(ds.id, v.parent, v.number, fraction) if v.parent else "—",
        }

    newest = found[-1].number
    shown = "the newest" if ds.version == newest else f"an older one; v{newest} is the newest"
    st.caption(
        f"Showing v{ds.version} ({shown}). A change (accepted or excluded images, a new class, a relabelling) "
        "makes a new version; the old ones stay as they were, so every run names the images it trained on. An "
        f"image keeps its side of the validation split in every version (counted here at {fraction:.0%}): a "
        "later version's validation accuracy is comparable with an earlier one's."
    )
    paging.paged_dataframe(found[::-1], f"{VERSIONS_PAGE}_{ds.id}", row=row, hide_index=True, width="stretch")


def retrain_button(run: RunInfo) -> None:
    """ "Train again on the newest version (vN)" on a run whose saved dataset has a newer version than it used."""
    if not run.dataset_id or not records.exists(run.dataset_id):
        return
    latest = versions.latest_number(run.dataset_id)
    used = run.dataset_version or 1
    if latest <= used:
        return
    try:
        change = versions.diff(run.dataset_id, used, latest).summary()
    except UserError as exc:
        session.error(exc, icon=":material/error:")
        return
    st.caption(f"Trained on v{used} of its dataset; v{latest} is the newest ({session.escape(change)}).")
    label = f"Train again on the newest version (v{latest})"
    if not access.may_change(session.user(), run.owner):
        owner = session.escape(access.display(run.owner))
        st.caption(f"Trained by {owner}: only they or an admin may train it again on the newest version (v{latest}).")
        return
    if st.button(label, icon=":material/update:", key=f"{RETRAIN}_{run.id}",
                 help="The same settings as this run, on the dataset as it is now, as a new run."):  # fmt: skip
        try:
            job = registry().retrain(run.id, session.user())
        except UserError as exc:
            session.error(exc, icon=":material/error:")
            return
        st.session_state[CURRENT_JOB] = job.id
        session.started(job.id)
        st.switch_page("pages/train.py", query_params={JOB_PARAM: job.id})


def compare_versions(runs: list[RunInfo]) -> None:
    """Each compared run's saved dataset and version; for two runs on different versions of one dataset, what
    changed between them and how many of the later one's validation images are new."""
    saved = [r for r in runs if r.dataset_id]
    if not saved:
        return
    st.markdown("**Dataset versions**")
    st.dataframe(
        pd.DataFrame([{"run": r.id, "dataset": r.dataset, "version": f"v{r.dataset_version}"} for r in saved]),
        hide_index=True,
        width="stretch",
    )
    for a, b in itertools.pairwise(saved):
        if a.dataset_id != b.dataset_id or a.dataset_version == b.dataset_version:
            continue
        if not records.exists(a.dataset_id):
            st.caption(f"The dataset of {a.id} and {b.id} is no longer saved: its versions cannot be compared.")
            continue
        later = b if b.dataset_version > a.dataset_version else a
        earlier = a if later is b else b
        try:
            d = versions.diff(a.dataset_id, a.dataset_version, b.dataset_version)
            n = versions.new_validation(a.dataset_id, earlier.dataset_version, later.dataset_version,
                                        later.config.validation_split)  # fmt: skip
        except UserError as exc:
            session.error(exc, icon=":material/error:")
            continue
        if n:
            fresh = (f"v{later.dataset_version} has {plural(n, 'validation image')} new since "
                     f"v{earlier.dataset_version}: their validation accuracies are measured on partly different "
                     "images")  # fmt: skip
        else:
            fresh = "they are validated on the same images"
        st.caption(
            f"{a.id} (v{a.dataset_version}) and {b.id} (v{b.dataset_version}): {session.escape(d.summary())}; {fresh}."
        )
