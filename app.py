"""Make your own image classifier: the entry point, and the router of its pages."""

import streamlit as st

from ui import session

st.set_page_config(page_title="Image classifier maker", page_icon=":material/image_search:", layout="wide")
session.start()
st.navigation(
    [
        st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_zip:", default=True),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
        st.Page("pages/classify.py", title="Classify", icon=":material/image_search:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
    ]
).run()
