"""The Review page's parts: the review queue labelled from the keyboard, the suspected label errors of the dataset's
runs, and the commit that makes both the dataset's next version.

    queue_section(ds, user)      # one image large with the model's top 3: 1–9 a class, X discard, N new class, ← undo
    suspects_section(ds, user)   # K keep, S take the suggested class, 1–9 relabel, X exclude, ← undo
    commit_section(ds, user)     # "Add the N labelled images as a new version"

Every key is an ``st.button(..., shortcut=...)`` whose callback decides before the page runs again, so the next
image is there at once; a refusal (core.workspace.access, a bad class name) comes back as a sentence.
"""

from __future__ import annotations

import time

import streamlit as st

from core.data.dataset import Dataset
from core.evaluate.label_issues import load_label_issues
from core.util.errors import UserError
from core.workspace import access, records, review, suspects, versions
from core.workspace.runs import run_infos
from ui import paging, session
from ui.session import DATASET_OPENED, plural

# Widget and session-state keys
REVIEW_CLASS = "review_class"  # + the class's place: the keys 1–9
REVIEW_DISCARD = "review_discard"
REVIEW_NEW = "review_new"  # the N key
REVIEW_NEW_OPEN = "review_new_open"  # session state: the new class's name field is shown
REVIEW_NEW_FORM = "review_new_form"
REVIEW_NEW_NAME = "review_new_name"
REVIEW_UNDO = "review_undo"
REVIEW_MESSAGE = "review_message"
REVIEW_COMMIT = "review_commit"
SUSPECT_KEEP = "suspect_keep"
SUSPECT_TAKE = "suspect_take"
SUSPECT_CLASS = "suspect_class"  # + the class's place
SUSPECT_EXCLUDE = "suspect_exclude"
DECIDED_PAGE = "review_decided_page"  # + dataset id: the page of decided suspects on view (ui.paging)
LABELLED_PAGE = "review_labelled_page"  # + dataset id: the page of labelled images waiting for the version
KEYS = 9  # classes with a number key
SOURCE_WORDS = {"api": "Sent through the API", "classify": "Classified on the Classify page",
                "demo": "Sent to a demo link", "upload": "Uploaded on the Dataset page"}  # fmt: skip


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds or 0))


def _run(action, *args) -> None:
    """A key's callback: the decision, or its refusal as a sentence at the top of the next run."""
    try:
        action(*args)
    except UserError as exc:
        session.flash(str(exc), error=True)


def _undo(dataset_id: str, user: str) -> None:
    try:
        back = review.undo(dataset_id, user)
    except UserError as exc:
        session.flash(str(exc), error=True)
        return
    if back is None:
        st.toast("Nothing to undo.", icon=":material/undo:")
    else:
        st.toast(f"Undone: {session.escape(back.name)} is back as it was.", icon=":material/undo:")


def classes(ds: Dataset) -> list[str]:
    """The dataset's classes, then those that labels waiting for the next version add: the order of the keys."""
    pending = {it.label for it in review.queue(ds.id, review.LABELLED) if it.label}
    return [*ds.classes, *sorted(pending - set(ds.classes), key=str.lower)]


def refusal(user: str, dataset_id: str) -> str | None:
    """Why ``user`` sees the keys greyed out, or None when they may label."""
    if review.may_label(user, dataset_id):
        return None
    saved = records.get(dataset_id)
    owner = access.display(saved.added_by if saved else "")
    return f"Only {owner} or an admin may label this dataset's images; you see them read-only."


def _undo_button(ds: Dataset, user: str, may: bool) -> None:
    st.button("Undo", key=REVIEW_UNDO, shortcut="Left", icon=":material/undo:", on_click=_undo, args=(ds.id, user),
              disabled=not may, help="Undo your last decision (← key); again for the one before.")  # fmt: skip


# ---------------------------------------------------------------------------------------------- the queue


def _about(item: review.Item) -> None:
    flags = []
    if item.none_of_these:
        flags.append(":orange-badge[None of these]")
    if item.not_sure:
        flags.append(":orange-badge[Not sure]")
    if flags:
        st.markdown(" ".join(flags))
    if item.top:
        st.markdown("\n".join(f"{k}. **{session.escape(c)}** · {p:.0%}" for k, (c, p) in enumerate(item.top[:3], 1)))
    else:
        st.caption("No answer of a model is kept with this image.")
    where = [SOURCE_WORDS.get(item.source, item.source), _when(item.added)]
    if item.key_id:
        where.append(f"key {item.key_id}")
    elif item.added_by:
        where.append(f"by {access.display(item.added_by)}")
    if item.run_id:
        where.append(f"model {item.run_id}")
    st.caption(session.escape(" · ".join(where)))


def _open_new() -> None:
    st.session_state[REVIEW_NEW_OPEN] = True


def _new_class(item_id: str, user: str) -> None:
    name = st.session_state.get(REVIEW_NEW_NAME, "")
    try:
        review.decide(item_id, review.check_label(name), user)
    except UserError as exc:
        session.flash(str(exc), error=True)
        return
    st.session_state[REVIEW_NEW_OPEN] = False


def _label_keys(item: review.Item, names: list[str], user: str, may: bool) -> None:
    for i, name in enumerate(names):
        st.button(session.escape(name), key=f"{REVIEW_CLASS}_{i}", shortcut=str(i + 1) if i < KEYS else None,
                  on_click=_run, args=(review.decide, item.id, name, user), disabled=not may,
                  width="stretch")  # fmt: skip
    st.button("Discard", key=REVIEW_DISCARD, shortcut="X", icon=":material/delete:", width="stretch",
              on_click=_run, args=(review.decide, item.id, None, user), disabled=not may,
              help="Not an image this dataset should learn from (X key).")  # fmt: skip
    st.button("New class…", key=REVIEW_NEW, shortcut="N", icon=":material/add:", width="stretch",
              on_click=_open_new, disabled=not may)  # fmt: skip
    if st.session_state.get(REVIEW_NEW_OPEN) and may:
        with st.form(REVIEW_NEW_FORM, clear_on_submit=True, border=False):
            st.text_input("Name of the new class", key=REVIEW_NEW_NAME, max_chars=review.MAX_CLASS)
            st.form_submit_button("Label it with this class", on_click=_new_class, args=(item.id, user))


def queue_section(ds: Dataset, user: str) -> None:
    """The next image of the queue, the keys to label it and the progress."""
    decided, total = review.progress(ds.id)
    if total:
        st.progress(decided / total, text=f"{decided:,} of {total:,} reviewed")
    if why := refusal(user, ds.id):
        st.info(why, icon=":material/lock:")
    waiting = review.queue(ds.id)
    if not waiting:
        st.info(
            "Nothing waits for a label. Images come here from Classify and the demo page (*Keep these images for "
            "review*), from API keys made to keep what they are sent, and from *Add images to a class* on the "
            "Dataset page.",
            icon=":material/inbox:",
        )
        _undo_button(ds, user, why is None)
        return
    item = waiting[0]
    left, right = st.columns([3, 2])
    try:
        left.image(review.image_bytes(item), caption=item.name, width="stretch")
    except UserError as exc:
        left.warning(str(exc), icon=":material/broken_image:")
    with right:
        _about(item)
        st.caption("Press a class's number, X to discard, N for a new class, ← to undo.")
        _label_keys(item, classes(ds), user, why is None)
        _undo_button(ds, user, why is None)


# ---------------------------------------------------------------------------------------------- suspects


def _found(ds: Dataset) -> list[tuple[int | None, str, list[dict]]]:
    """Each search of a run of this dataset: (the version it trained on, the run, its suspects), newest first."""
    found = []
    for run in run_infos():
        if run.dataset_id == ds.id and (issues := load_label_issues(run.path)) is not None:
            found.append((run.dataset_version, run.id, issues.suspects))
    return found


def _judge_keys(ds: Dataset, s: suspects.Suspect, user: str, may: bool) -> None:
    args = (suspects.judge, ds.id, s)
    st.button(f"Keep {session.escape(s.given)}", key=SUSPECT_KEEP, shortcut="K", width="stretch",
              on_click=_run, args=(*args, suspects.KEEP, user), disabled=not may)  # fmt: skip
    st.button(f"Take {session.escape(s.suggested)}", key=SUSPECT_TAKE, shortcut="S", width="stretch", type="primary",
              on_click=_run, args=(*args, suspects.RELABEL, user, s.suggested), disabled=not may)  # fmt: skip
    for i, name in enumerate(ds.classes):
        if name not in (s.given, s.suggested):
            st.button(f"Relabel {session.escape(name)}", key=f"{SUSPECT_CLASS}_{i}", width="stretch",
                      shortcut=str(i + 1) if i < KEYS else None, disabled=not may,
                      on_click=_run, args=(*args, suspects.RELABEL, user, name))  # fmt: skip
    st.button("Exclude from training", key=SUSPECT_EXCLUDE, shortcut="X", width="stretch",
              on_click=_run, args=(*args, suspects.EXCLUDE, user), disabled=not may)  # fmt: skip


def suspects_section(ds: Dataset, user: str) -> None:
    """The suspects of the dataset's runs one by one, and what was decided on each."""
    found = _found(ds)
    if not found:
        st.info("No run of this dataset has been searched for suspected label errors yet: start a search on the "
                "Evaluate page.", icon=":material/label_off:")  # fmt: skip
        st.page_link("pages/evaluate.py", label="Go to Evaluate", icon=":material/fact_check:")
        return
    listed = suspects.gather(ds.id, found)
    waiting = [s for s in listed if s.state == suspects.OPEN]
    if listed:
        done = len(listed) - len(waiting)
        st.progress(done / len(listed), text=f"{done:,} of {len(listed):,} suspects decided")
    why = refusal(user, ds.id)
    if why:
        st.info(why, icon=":material/lock:")
    if waiting:
        s = waiting[0]
        left, right = st.columns([3, 2])
        try:
            left.image((ds.root / s.path).read_bytes(), caption=s.path, width="stretch")
        except OSError:
            left.warning(f"{s.path} is no longer on disk.", icon=":material/broken_image:")
        with right:
            st.markdown(f"Given **{session.escape(s.given)}** · suggested **{session.escape(s.suggested)}** "
                        f"{s.confidence:.0%}")  # fmt: skip
            st.caption("K keeps the label, S takes the suggested one, a number relabels, X excludes, ← undoes.")
            _judge_keys(ds, s, user, why is None)
            _undo_button(ds, user, why is None)
    else:
        st.success("Every suspect is decided.", icon=":material/check_circle:")
        _undo_button(ds, user, why is None)
    _decided_table(ds.id, [s for s in listed if s.state != suspects.OPEN])


def _decided_table(dataset_id: str, decided: list[suspects.Suspect]) -> None:
    if not decided:
        return
    words = {suspects.KEEP: "keep", suspects.EXCLUDE: "exclude from training", suspects.RELABEL: "relabel"}

    def row(s: suspects.Suspect) -> dict:
        return {"image": s.path, "given": s.given, "decision": words[s.state], "to": s.label or "",
                "in version": s.version or ""}  # fmt: skip

    with st.expander(f"Decided ({len(decided):,})"):
        paging.paged_dataframe(decided, f"{DECIDED_PAGE}_{dataset_id}", row=row, hide_index=True, width="stretch")


# ---------------------------------------------------------------------------------------------- the version


def _commit(dataset_id: str, user: str) -> None:
    try:
        v = review.commit(dataset_id, user, st.session_state.get(REVIEW_MESSAGE, ""))
    except UserError as exc:
        session.flash(str(exc), error=True)
        return
    st.session_state.pop(DATASET_OPENED, None)  # opened again at its new version
    st.session_state[REVIEW_MESSAGE] = ""
    session.flash(f"Made version {v.number} of the dataset: {v.message}")


def commit_section(ds: Dataset, user: str) -> None:
    """What waits for the next version, its one-line message and the button that makes it."""
    new, relabels = review.pending(ds.id)
    st.subheader("Next version")
    newest = versions.newest(ds.id)
    st.caption(f"The dataset is at version {newest.number} ({plural(len(newest.entries), 'image')}). "
               + (f"{plural(relabels, 'suspect')} to relabel wait too." if relabels else ""))  # fmt: skip
    st.text_input("Message", key=REVIEW_MESSAGE, max_chars=versions.MAX_MESSAGE,
                  placeholder="What this version changes, in one line (optional)")  # fmt: skip
    what = f"Add the {new:,} labelled image{'' if new == 1 else 's'} as a new version"
    st.button(what, key=REVIEW_COMMIT, type="primary", icon=":material/new_label:", on_click=_commit,
              args=(ds.id, user), disabled=not (new or relabels) or refusal(user, ds.id) is not None)  # fmt: skip
    labelled = review.queue(ds.id, review.LABELLED)
    if labelled:

        def row(it: review.Item) -> dict:
            return {"image": it.name, "class": it.label, "by": access.display(it.decided_by),
                    "from": SOURCE_WORDS.get(it.source, it.source)}  # fmt: skip

        with st.expander(f"Labelled, waiting for the next version ({len(labelled):,})"):
            paging.paged_dataframe(labelled, f"{LABELLED_PAGE}_{ds.id}", row=row, hide_index=True, width="stretch")
