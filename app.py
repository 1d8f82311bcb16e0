"""Make your own image classifier: the Streamlit entry point (a router only)."""

import streamlit as st

from pages.common import init_session

st.set_page_config(page_title="Image classifier maker", page_icon=":material/image_search:", layout="wide")
init_session()
st.navigation(
    [
        st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_zip:", default=True),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/classify.py", title="Classify", icon=":material/image_search:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
    ]
).run()
