"""Review: is this label right? The images kept for review, labelled from the keyboard, and the suspected label errors
of the dataset's runs, judged the same way; both become the dataset's next version with one button.

The page works on the dataset the address names (``?dataset=<id>``, like every page). The queue is the dataset's
(core.workspace.review), shared by everyone: whoever may change the dataset labels it, the others see it read-only.
"""

import streamlit as st

from core.util.errors import UserError
from ui import session
from ui.review_views import commit_section, queue_section, suspects_section

MODE = "review_mode"  # widget key: the queue or the suspects
MODES = {"queue": "Images to label", "suspects": "Suspected label errors"}

session.page()
st.title("Review")
ds = session.dataset()
if ds is None:
    st.info("Choose a dataset on the Dataset page first: its review queue is shown here.", icon=":material/info:")
    st.page_link("pages/dataset.py", label="Go to Dataset", icon=":material/folder_zip:")
    st.stop()
if not ds.id:
    st.info("This dataset is not saved on the server, so it has no review queue.", icon=":material/info:")
    st.stop()

st.caption(f"Dataset {session.escape(ds.title)} · version {ds.version}")
mode = st.segmented_control("Review", list(MODES), format_func=MODES.get, default="queue", key=MODE,
                            label_visibility="collapsed") or "queue"  # fmt: skip
user = session.user()
try:
    if mode == "queue":
        queue_section(ds, user)
    else:
        suspects_section(ds, user)
    commit_section(ds, user)
except UserError as exc:  # the dataset deleted meanwhile, or the workspace database cannot be used
    session.error(exc, icon=":material/error:")
