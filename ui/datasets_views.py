"""The Dataset page's parts: saving an uploaded zip, and renaming or deleting a saved dataset.

ingest(path, key)      # save the zip on the server and open it (a user error keeps the dataset open before)
pending()              # an upload that would remove others' least recently used datasets: which, Save / Cancel
manage(saved)          # Rename and Delete for whoever may change the dataset
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from core.util.errors import UserError
from core.util.text import human_size
from core.workspace import access, datasets, records, space
from ui import session
from ui.session import (
    DATASET_DELETE,
    DATASET_KEY,
    DATASET_NEW_NAME,
    DATASET_OPENED,
    DATASET_RENAME,
    ProgressBar,
    plural,
)

PENDING = "dataset_pending"  # session: [path, key] of an upload waiting for its removals to be accepted
PENDING_SAVE = "dataset_pending_save"
PENDING_CANCEL = "dataset_pending_cancel"


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def who(user: str) -> str:
    return access.display(user)


def label(saved: records.SavedDataset) -> str:
    return f"{saved.name} · {plural(saved.classes, 'class', 'classes')} · {plural(saved.images, 'image')} · {saved.id}"


def ingest(path: Path, key: str, confirmed: bool = False) -> None:
    """Save the zip on the server and show it; on a user error keep the dataset chosen before, and say so.

    When saving it would remove other datasets to stay within the server's disk budget, nothing is saved yet: the
    upload waits (``pending()``) until the user has read what would go and accepted it.
    """
    if not confirmed:
        try:
            plan = space.plan_save(path, session.user())
        except UserError as exc:
            _refused(exc)
            _done(path, key)
            return
        if plan.removes:
            st.session_state[PENDING] = [str(path), key]
            st.session_state[DATASET_KEY] = key  # the same file is not read again on every rerun
            return
    st.session_state.pop(PENDING, None)
    bar = ProgressBar("Reading the dataset")
    try:
        saved = datasets.save_zip(path, owner=session.user(), progress=bar)
        session.set_dataset(datasets.open_dataset(saved.id))
        if saved.removed:
            st.info(
                "To keep the saved datasets within this server's disk space, the least recently used were removed: "
                f"{session.escape(', '.join(saved.removed))}.",
                icon=":material/auto_delete:",
            )
    except UserError as exc:
        _refused(exc)
    finally:
        _done(path, key)
        bar.empty()


def _refused(exc: UserError) -> None:
    previous = st.session_state.get(DATASET_OPENED)
    kept = f" The dataset loaded before, **{session.escape(previous.title)}**, is still in use." if previous else ""
    st.error(f"{session.escape(exc)}{kept}", icon=":material/error:")


def _done(path: Path, key: str) -> None:
    st.session_state[DATASET_KEY] = key  # the same file is not read again on every rerun
    path.unlink(missing_ok=True)  # the saved dataset holds what it needs


def pending() -> None:
    """An upload waiting for the user to accept the datasets saving it would remove: which, and Save / Cancel."""
    held = st.session_state.get(PENDING)
    if not held or not Path(held[0]).is_file():
        st.session_state.pop(PENDING, None)
        return
    path, key = Path(held[0]), held[1]
    try:
        plan = space.plan_save(path, session.user())  # again: others may have made or taken room since
    except UserError as exc:
        st.session_state.pop(PENDING, None)
        _refused(exc)
        _done(path, key)
        return
    if not plan.removes:
        ingest(path, key, confirmed=True)
        return
    me = session.user()
    gone = "; ".join(
        f"**{session.escape(r.name)}** ({human_size(r.bytes)}, "
        f"{'yours' if access.same_user(me, r.added_by) else 'saved by a guest'}, last used {when(r.last_used)})"
        for r in plan.removes
    )
    n = len(plan.removes)
    which = "the least recently used dataset" if n == 1 else f"the {n} least recently used datasets"
    st.warning(
        f"This server keeps a limited space for saved datasets: saving **{session.escape(path.name)}** "
        f"({human_size(plan.bytes)}) would remove {which} you may remove: "
        f"{gone}. Runs trained on them keep working for Classify.",
        icon=":material/auto_delete:",
    )
    left, right = st.columns(2)
    if left.button("Save it and remove them", key=PENDING_SAVE, type="primary", icon=":material/save:"):
        ingest(path, key, confirmed=True)
    elif right.button("Cancel", key=PENDING_CANCEL):
        st.session_state.pop(PENDING, None)
        path.unlink(missing_ok=True)
        st.rerun()


def rename(saved: records.SavedDataset) -> None:
    try:
        renamed = datasets.rename(saved.id, st.session_state[f"{DATASET_NEW_NAME}_{saved.id}"], session.user())
    except UserError as exc:
        session.flash(str(exc), error=True)
        return
    st.session_state.pop(DATASET_OPENED, None)  # opened again, with its new name
    session.flash(f"Renamed the dataset {saved.name} to {renamed.name}.")


def delete(saved: records.SavedDataset, force: bool) -> None:
    try:
        datasets.delete(saved.id, session.user(), force=force)
    except UserError as exc:
        session.flash(str(exc), error=True)
        return
    if st.session_state.get(session.DATASET) == saved.id:
        session.forget_dataset()
    session.flash(f"Deleted the dataset {saved.name}.")


def manage(saved: records.SavedDataset) -> None:
    """Rename and Delete for whoever may change the dataset; who may, for everyone else."""
    if not access.may_change(session.user(), saved.added_by):
        owner = session.escape(access.display(saved.added_by))
        st.caption(f"Only {owner} or an admin may rename or delete this dataset.")
        return
    c1, c2, _ = st.columns([1, 1, 4])
    with c1.popover("Rename", icon=":material/edit:"):
        st.text_input("New name", value=saved.name, max_chars=datasets.MAX_NAME, key=f"{DATASET_NEW_NAME}_{saved.id}")
        st.button("Save the name", key=DATASET_RENAME, on_click=rename, args=(saved,))
    with c2.popover("Delete", icon=":material/delete:"):
        warning = datasets.deletion_warning(saved.id)
        st.markdown(
            f"Delete the dataset **{saved.name}** ({plural(saved.images, 'image')}, {human_size(saved.bytes)}) "
            "from this server, for everyone?"
        )
        if warning:
            st.warning(warning, icon=":material/warning:")
        st.button(
            "Delete anyway" if warning else "Delete",
            key=DATASET_DELETE,
            type="primary",
            on_click=delete,
            args=(saved, bool(warning)),
        )
