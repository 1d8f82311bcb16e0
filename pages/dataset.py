"""Dataset page."""

import streamlit as st

st.title("Dataset")
st.info("Upload a zip of class folders to begin.")
