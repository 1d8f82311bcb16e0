"""Make your own image classifier: the entry point, and the router of its pages."""

import streamlit as st

from core.util.errors import UserError
from ui import session
from ui.jobs_views import sidebar_status

demo = session.DEMO_PARAM in st.query_params  # a Share link: that one model alone (core.workspace.share, pages/demo.py)
st.set_page_config(
    page_title="Image classifier maker", page_icon=":material/image_search:", layout="centered" if demo else "wide"
)
session.start()
if demo:
    # No menu and no sidebar (no account, no job status), whatever page the address names. No sign-in either: the
    # link's key, checked by the page, is the permission, and it opens that one model's demo and nothing else.
    page = st.navigation(
        [st.Page("pages/demo.py", title="Model demo", icon=":material/image_search:", url_path="demo")],
        position="hidden",
    )
else:
    session.gate()  # with sign-in on, a visitor who is not signed in sees nothing of the workspace
    page = st.navigation(
        [
            st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_zip:", default=True),
            st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
            st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
            st.Page("pages/classify.py", title="Classify", icon=":material/image_search:"),
            st.Page("pages/review.py", title="Review", icon=":material/rate_review:"),
            st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
            st.Page("pages/jobs.py", title="Jobs", icon=":material/work_history:"),
        ]
    )
    with st.sidebar:
        session.account()
        sidebar_status()
try:
    page.run()
except UserError as exc:  # the workspace database locked or damaged mid-run: a sentence, never a traceback
    session.error(exc, icon=":material/error:")
