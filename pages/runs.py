"""Runs: every saved model on this server, its history, download and delete."""

from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from core import UserError
from core.cache import ArrayCache
from core.runs import delete_run, export_zip, history, list_runs, read_json
from pages import charts
from pages.common import RUN_PARAM

st.title("Runs")


def cache_panel() -> None:
    cache = ArrayCache()
    info = cache.info()
    with st.expander(f"Cache of frozen-layer features and decoded images: {info['bytes'] / 1024**2:,.0f} MB"):
        st.write(
            "Training again on the same photos with other head or optimizer settings reads the frozen layers' "
            f"outputs from here instead of computing them again. {info['entries']:,} entries, limit "
            f"{info['limit_bytes'] / 1024**2:,.0f} MB; the least recently used go first."
        )
        if st.button("Clear the cache", icon=":material/delete_sweep:", disabled=not info["entries"]):
            st.toast(f"Cleared {cache.clear() / 1024**2:,.1f} MB")
            st.rerun()


runs = list_runs()
if not runs:
    cache_panel()
    st.info("No saved runs yet: train a model and it appears here for everyone on this server.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

table = pd.DataFrame(runs)
columns = ["id", "finished", "status", "dataset", "classes", "head", "weights", "image_size", "optimizer",
           "epochs_completed", "val_accuracy"]  # fmt: skip
st.dataframe(
    table[[c for c in columns if c in table]],
    hide_index=True,
    width="stretch",
    column_config={"val_accuracy": st.column_config.NumberColumn("val accuracy", format="percent")},
)

ids = [r["id"] for r in runs]
wanted = st.query_params.get(RUN_PARAM)
run = st.selectbox("Run", runs, index=ids.index(wanted) if wanted in ids else 0, format_func=lambda r: r["id"])
path = Path(run["path"])
rows = history(path)
if rows:
    rows = [{**r, "epoch": int(r["epoch"]) + 1} for r in rows]  # CSVLogger counts epochs from 0
    left, right = st.columns(2)
    left.altair_chart(charts.epoch_curves(rows, "loss", "Loss per epoch"), width="stretch")
    right.altair_chart(charts.epoch_curves(rows, "accuracy", "Accuracy per epoch"), width="stretch")
with st.expander("Settings"):
    st.json(read_json(path / "config.json"))

c1, c2, c3 = st.columns(3)
c1.page_link("pages/classify.py", label="Classify with this run", icon=":material/image_search:",
             query_params={RUN_PARAM: run["id"]})  # fmt: skip
c2.download_button(  # zipped on click only: compressing the model takes seconds, too long for every rerun
    "Download run (.zip)", partial(export_zip, path), f"{run['id']}.zip", "application/zip",
    icon=":material/download:",
)  # fmt: skip
with c3.popover("Delete run", icon=":material/delete:"):
    st.write(f"Delete **{run['id']}** for everyone on this server? This cannot be undone.")
    if st.button("Yes, delete it", type="primary"):
        try:
            delete_run(path)
        except UserError as exc:
            st.error(str(exc))
        else:
            st.toast(f"Deleted {run['id']}")
            st.rerun()

cache_panel()
