"""The Evaluate page's suspected label errors: the button that starts the search (a job), and the gallery of
suspects with "Exclude from training" / "Keep" per image.

    label_issues_section(run)     # one call on the Evaluate page

The search runs as a job (``core.evaluate.label_issues`` in a worker; its progress drawn here like an evaluation's); its
result is the run's label_issues.json, read on every draw. Decisions belong to the run's saved dataset (its folder
on the server), so a reload, a colleague and the next training all see them.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.evaluate.label_issues import DEFAULT_FOLDS, LabelIssues, load_label_issues
from core.jobs.kinds import LABEL_ISSUES
from core.util.errors import UserError
from core.workspace import datasets, records
from core.workspace.decisions import EXCLUDE, KEEP, decide, decisions
from core.workspace.runs import RunInfo
from ui import paging, session, tasks
from ui.evaluate_views import GALLERY_COLUMNS, GALLERY_PAGE, THUMB_SIZE, thumbnail

# Widget and session-state keys (the per-run ones get the run id appended)
LI_JOB = "label_issues_job"  # session state: the search this session started
LI_FILTER = "label_issues_filter"
LI_SHOWN = "label_issues_shown"  # + run id and filter: the gallery's page on view (ui.paging)
LI_NAMES = "label_issues_names"  # + run id and filter: the page of names, the images gone
LI_EXCLUDE = "label_issues_exclude"  # + run id + the suspect's place in the list
LI_KEEP = "label_issues_keep"
LI_ERROR = "label_issues_error"  # session state: a decision that could not be saved, shown once
FILTERS = {"all": "All", "open": "Not decided", EXCLUDE: "Excluded", KEEP: "Kept"}
STATE_WORDS = {EXCLUDE: ":red[Excluded from training]", KEEP: ":green[Kept]"}
NO_SAVED_DATASET = (
    "Exclusions are saved with the dataset, and this run's dataset is not saved on this server (it was trained from "
    "a zip path, or the dataset was deleted). Upload the zip on the Dataset page and train from it to exclude images."
)


def _saved_dataset(run: RunInfo) -> str:
    """The run's saved dataset id while that dataset exists, else ''."""
    return run.dataset_id if run.dataset_id and records.exists(run.dataset_id) else ""


def _start(run: RunInfo, label: str) -> None:
    if st.button(label, icon=":material/label_off:", key=f"label_issues_start_{run.id}"):
        dataset_id = _saved_dataset(run)
        try:
            ds = datasets.open_dataset(dataset_id, version=run.dataset_version) if dataset_id else None
        except UserError as exc:
            session.error(exc, icon=":material/error:")
            return
        tasks.start(LI_JOB, LABEL_ISSUES, {"run": run.id, "folds": DEFAULT_FOLDS}, ds)
        st.rerun()  # draw the job's progress


def label_issues_section(run: RunInfo) -> None:
    st.subheader("Suspected label errors")
    finished = tasks.follow(LI_JOB)
    if finished is not None and finished.error:
        session.error(finished.error, icon=":material/error:")
    if st.session_state.get(LI_JOB):
        return  # running: its progress is drawn above
    found = load_label_issues(run.path)
    if found is None:
        st.caption(
            "Images of this run's training and validation split whose given class the other images argue against: "
            "each image is scored by a simple classifier trained, fold by fold, on the others' frozen-layer "
            "features, and cleanlab's confident learning picks the suspects. Excluded images are left out of the "
            "next training of the dataset."
        )
        _start(run, "Find suspected label errors")
        return
    when = found.created.replace("T", " ")
    st.caption(
        f"{len(found.suspects):,} suspects among {found.images:,} training and validation images of "
        f"{found.dataset}, most suspicious first ({found.folds}-fold out-of-fold predictions on {found.features}; "
        f"they agree with the given class for {found.out_of_fold_accuracy:.0%} of the images). Searched {when}."
    )
    for warning in found.warnings:
        st.warning(warning, icon=":material/warning:")
    with st.expander("Search again"):
        _start(run, "Find suspected label errors")
    if found.suspects:
        suspects_gallery(found, run)
    else:
        st.success("No image's label looks wrong.", icon=":material/check_circle:")


def _decide(dataset_id: str, suspect: dict, decision: str) -> None:
    try:
        decide(dataset_id, suspect["file"], decision, session.user(), suspect["given"], suspect["suggested"])
    except UserError as exc:
        st.session_state[LI_ERROR] = str(exc)


def _first_page(run_id: str) -> None:
    """The filter changed: its gallery starts at its first page (the most suspicious of the new filter)."""
    picked = st.session_state.get(f"{LI_FILTER}_{run_id}") or "all"
    for key in (LI_SHOWN, LI_NAMES):
        paging.first_page(f"{key}_{run_id}_{picked}")


@st.fragment
def suspects_gallery(found: LabelIssues, run: RunInfo) -> None:
    dataset_id = _saved_dataset(run)
    decided = decisions(dataset_id)
    if not dataset_id:
        st.info(NO_SAVED_DATASET, icon=":material/info:")
    else:
        n = sum(1 for d in decided.values() if d["decision"] == EXCLUDE)
        name = session.escape(found.dataset)
        st.caption(f"{n:,} image{'s' if n != 1 else ''} of {name} excluded from its next training.")
    if message := st.session_state.pop(LI_ERROR, None):
        session.error(message, icon=":material/error:")
    picked = st.segmented_control(
        "Show", list(FILTERS), format_func=FILTERS.get, default="all", key=f"{LI_FILTER}_{run.id}",
        on_change=_first_page, args=(run.id,),
    ) or "all"  # fmt: skip
    items = [
        (i, s) for i, s in enumerate(found.suspects)
        if picked == "all" or decided.get(s["file"], {}).get("decision", "open") == picked
    ]  # fmt: skip
    root = Path(found.root) if found.root else None
    if root is None or not root.is_dir():
        st.warning(
            "These images are no longer on disk, so they cannot be shown; their names are listed instead.",
            icon=":material/broken_image:",
        )
        paging.paged_dataframe(items, f"{LI_NAMES}_{run.id}_{picked}", row=lambda item: item[1],
                               columns=["file", "given", "suggested", "confidence"], hide_index=True,
                               width="stretch")  # fmt: skip
        return
    grid = st.container()  # the page's suspects above the control that picks them
    shown = paging.pager(len(items), GALLERY_PAGE, f"{LI_SHOWN}_{run.id}_{picked}", "Suspects")
    with grid:
        _gallery_page(items[shown], root, run, dataset_id, decided)


def _gallery_page(items: list[tuple[int, dict]], root: Path, run: RunInfo, dataset_id: str, decided: dict) -> None:
    """One page of suspects (each with its place in the whole list, which names its buttons): image, classes,
    decision, and Exclude / Keep."""
    for n, (i, s) in enumerate(items):
        if n % GALLERY_COLUMNS == 0:
            cols = st.columns(GALLERY_COLUMNS)
        col = cols[n % GALLERY_COLUMNS]
        image, name = root / s["file"], Path(s["file"]).name
        try:
            col.image(thumbnail(str(image), THUMB_SIZE, run.config.resize), caption=name, width="stretch")
        except (UserError, OSError):
            col.warning(f"{name} is no longer on disk.")
        given, suggested = session.escape(s["given"]), session.escape(s["suggested"])
        col.markdown(f"given **{given}** · suggested **{suggested}** {s['confidence']:.0%}")
        state = decided.get(s["file"], {}).get("decision")
        col.markdown(STATE_WORDS.get(state, "Not decided"))
        b1, b2 = col.columns(2)
        # The decided button is greyed out; the other one changes the decision back.
        b1.button("Exclude from training", key=f"{LI_EXCLUDE}_{run.id}_{i}", on_click=_decide,
                  args=(dataset_id, s, EXCLUDE), disabled=not dataset_id or state == EXCLUDE,
                  width="stretch")  # fmt: skip
        b2.button("Keep", key=f"{LI_KEEP}_{run.id}_{i}", on_click=_decide, args=(dataset_id, s, KEEP),
                  disabled=not dataset_id or state == KEEP, width="stretch")  # fmt: skip
