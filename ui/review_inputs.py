"""The ways images reach a dataset's review queue from the pages (core.workspace.review).

    add_images_section(ds)                                     # Dataset page: more images of a class, labelled
    keep_toggle(run_info, "Keep these images for review")      # Classify, demo: the opt-in checkbox, off by default
    keep_for_review(run_info, [(name, data, prediction)], "classify")   # what was classified, queued once

Queueing is allowed to whoever may use the page with the run (a demo link's holder included); images queued with a
class (an upload) need the right to change the dataset, as every label does.
"""

from __future__ import annotations

import hashlib

import streamlit as st

from core.data.dataset import Dataset
from core.util.errors import UserError
from core.workspace import records, review
from core.workspace.runs import RunInfo
from ui import session
from ui.review_views import refusal
from ui.session import plural

# Widget and session-state keys
ADD_FILES = "review_add_files"  # + the round: a new uploader once its images are queued
ADD_ROUND = "review_add_round"  # session state
ADD_CAMERA_ON = "review_add_camera_on"
ADD_CAMERA = "review_add_camera"  # + the round
ADD_CLASS = "review_add_class"
ADD_NEW_CLASS = "review_add_new_class"
ADD_BUTTON = "review_add_button"
ADD_DONE = "review_add_done"  # session state: what the last add did, shown once
KEEP_FOR_REVIEW = "keep_for_review"  # + the page's name
KEPT = "kept_for_review"  # session state: (dataset, image hash) already queued by this session
NEW_CLASS = "New class…"
MAX_IMAGE_MB = 50


def _kept() -> set:
    return st.session_state.setdefault(KEPT, set())


def _add(ds: Dataset, images: list[tuple[str, bytes]], label: str, user: str) -> None:
    """Queue the images labelled ``label``; what happened is said on the next run (a callback)."""
    done, refused = 0, []
    for name, data in images:
        try:
            review.enqueue(ds.id, data, name, source="upload", user=user, label=label)
            done += 1
        except review.QueueFull as exc:
            refused.append(str(exc))
            break
        except UserError as exc:
            refused.append(str(exc))
    st.session_state[ADD_DONE] = (done, label, refused)
    st.session_state[ADD_ROUND] = st.session_state.get(ADD_ROUND, 0) + 1  # empties the uploader


def add_images_section(ds: Dataset) -> None:
    """More images for a class, without a zip: they wait on the Review page, labelled, for the next version."""
    st.subheader("Add images to a class")
    user = session.user()
    if why := refusal(user, ds.id):
        st.caption(why.replace("label this dataset's images", "add images to this dataset"))
        return
    if done := st.session_state.pop(ADD_DONE, None):
        count, label, refused = done
        if count:
            st.success(f"{plural(count, 'image')} of {session.escape(label)} wait on the Review page, labelled, for "
                       "the dataset's next version.", icon=":material/check_circle:")  # fmt: skip
        for sentence in refused:
            session.error(sentence)
    st.caption("They wait in the dataset's review queue with their class, and become part of its next version when "
               "someone presses *Add the … labelled images as a new version* on the Review page.")  # fmt: skip
    turn = st.session_state.get(ADD_ROUND, 0)
    left, right = st.columns([3, 2])
    files = left.file_uploader("Images", accept_multiple_files=True, key=f"{ADD_FILES}_{turn}",
                               max_upload_size=MAX_IMAGE_MB)  # fmt: skip
    photo = None
    if left.toggle("Use the camera", key=ADD_CAMERA_ON):
        photo = left.camera_input("Take a photo", key=f"{ADD_CAMERA}_{turn}")
    picked = right.selectbox("Class", [*ds.classes, NEW_CLASS], key=ADD_CLASS)
    label = right.text_input("Name of the new class", key=ADD_NEW_CLASS) if picked == NEW_CLASS else picked
    images = [(f.name, f.getvalue()) for f in files or []]
    if photo is not None:
        images.append(("camera photo.jpg", photo.getvalue()))
    right.button(f"Add {plural(len(images), 'image')}", key=ADD_BUTTON, icon=":material/add_photo_alternate:",
                 disabled=not images or not (label or "").strip(), on_click=_add,
                 args=(ds, images, label, user))  # fmt: skip


def keep_toggle(run: RunInfo, page: str, label: str = "Keep these images for review") -> bool:
    """The opt-in checkbox (off by default); greyed out, saying why, for a run without a saved dataset (left out on
    the demo page)."""
    saved = bool(run.dataset_id) and records.exists(run.dataset_id)
    if not saved and page == "demo":
        return False  # a stakeholder is not shown what they cannot use
    why = "" if saved else " This model's dataset is not saved on this server, so there is no queue to keep them in."
    return st.checkbox(
        label, key=f"{KEEP_FOR_REVIEW}_{page}", value=False, disabled=not saved,
        help="The images and the model's answers are kept in the review queue of the dataset the model was "
        "trained on, where they can be labelled and added to its next version." + why,
    )  # fmt: skip


def keep_for_review(run: RunInfo, answered: list[tuple[str, bytes, object]], source: str, user: str = "") -> None:
    """Queue what was classified (name, bytes, core.model.predict.Prediction), once per image and session; say
    how many were kept, and why not all when the queue is full."""
    kept, fresh, note = _kept(), 0, None
    for name, data, p in answered:
        if not p.ok or (run.dataset_id, digest := hashlib.sha256(data).hexdigest()) in kept:
            continue
        try:
            review.enqueue(run.dataset_id, data, name, run_id=run.id, top=p.top, not_sure=not p.sure,
                           none_of_these=p.none_of_these, source=source, user=user)  # fmt: skip
        except UserError as exc:  # the queue is full, or the dataset was deleted: the answers still stand
            note = str(exc)
            break
        kept.add((run.dataset_id, digest))
        fresh += 1
    if note:
        st.warning(session.escape(note), icon=":material/inventory_2:")
    elif fresh:
        st.caption(f"Kept {plural(fresh, 'image')} in the review queue of this model's dataset.")
