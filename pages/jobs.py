"""Jobs: every queued, running and recently finished job on this server, from any tab, with Stop and Restart."""

import streamlit as st

from ui import session
from ui.jobs_views import jobs_list

session.page()
st.title("Jobs")
st.caption(
    "Trainings, learning-rate tests, evaluations and speed tests of everyone on this server. One runs at a time "
    "(more when the server allows); the rest wait in line and start by themselves."
)
jobs_list()
