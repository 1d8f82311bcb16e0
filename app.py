"""Make your own image classifier: the Streamlit entry point (a router only)."""

import streamlit as st

st.set_page_config(page_title="Image classifier maker", page_icon=":material/image_search:", layout="wide")
st.navigation([st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_zip:")]).run()
