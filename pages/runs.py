"""Runs: every saved model on this server, its history; download, delete, share or export it, its API keys, its
model card; 2-5 runs compared side by side."""

from functools import partial

import streamlit as st

from core.workspace import records
from core.workspace.runs import export_zip, run_infos
from ui import charts, session
from ui.card_views import card_section
from ui.export_views import export_section
from ui.keys_views import keys_panel
from ui.runs_views import cache_panel, compare_section, delete_button, runs_table
from ui.session import DATASET_PARAM, RUN_PARAM, SETTINGS_FROM
from ui.share_views import share_panel
from ui.versions_views import retrain_button

session.page()
st.title("Runs")
runs = run_infos()
if not runs:
    cache_panel()
    st.info("No saved runs yet: train a model and it appears here for everyone on this server.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

runs_table(runs)
run = session.run_picker(runs, "Run")
rows = run.history()
if rows:
    left, right = st.columns(2)
    left.altair_chart(charts.epoch_curves(rows, "loss", "Loss per epoch", run.phase2_start), width="stretch")
    right.altair_chart(charts.epoch_curves(rows, "accuracy", "Accuracy per epoch", run.phase2_start), width="stretch")
with st.expander("Settings"):
    st.json(run.config.to_dict())

if run.dataset_id and records.exists(run.dataset_id):
    st.page_link("pages/train.py", label="Train again with these settings", icon=":material/replay:",
                 query_params={DATASET_PARAM: run.dataset_id, SETTINGS_FROM: run.id})  # fmt: skip
    retrain_button(run)  # on a run whose dataset has a newer version than it trained on
else:
    st.caption("Its dataset is no longer saved on this server: to train again, upload the zip on Dataset.")
c0, c1, c2, c3 = st.columns(4)
c0.page_link("pages/evaluate.py", label="Evaluate this run", icon=":material/fact_check:",
             query_params={RUN_PARAM: run.id})  # fmt: skip
c1.page_link("pages/classify.py", label="Classify with this run", icon=":material/image_search:",
             query_params={RUN_PARAM: run.id})  # fmt: skip
c2.download_button(  # zipped on click only: compressing the model takes seconds, too long for every rerun
    "Download run (.zip)", partial(export_zip, run.path), f"{run.id}.zip", "application/zip",
    icon=":material/download:",
)  # fmt: skip
delete_button(c3, run)
share_panel(run)
keys_panel(run)
card_section(run)
export_section(run)

compare_section(runs)
cache_panel()
