"""Classify: pick a saved model, drop images (or take a photo), see the ranked classes."""

import pandas as pd
import streamlit as st

from core import UserError
from core.runs import list_runs
from pages import charts
from pages.common import RUN_PARAM

IMAGE_TYPES = None  # accept any file: a non-image gets its own message, the others still classify
MAX_IMAGE_MB = 50  # per photo; the 1 GB server limit is for dataset zips


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def cached_run(path: str, saved: str):
    """One read-only loaded model per run and save time, shared by every session."""
    from core.predict import load_run

    return load_run(path)


st.title("Classify")
runs = list_runs()
if not runs:
    st.info("No saved model yet: train one first.", icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

ids = [r["id"] for r in runs]
wanted = st.query_params.get(RUN_PARAM)
run_info = st.selectbox(
    "Model",
    runs,
    index=ids.index(wanted) if wanted in ids else 0,
    format_func=lambda r: f"{r['id']} · {r['dataset']} · {r['classes']} classes · val acc {r['val_accuracy']:.1%}",
)
try:
    run = cached_run(run_info["path"], run_info.get("finished", ""))
except UserError as exc:
    st.error(str(exc), icon=":material/error:")
    st.stop()

c1, c2 = st.columns([3, 1])
files = c1.file_uploader(
    "Images to classify", type=IMAGE_TYPES, accept_multiple_files=True, max_upload_size=MAX_IMAGE_MB
)
top_k = c2.slider("Top classes to show", 1, max(1, min(10, len(run.classes))), min(3, len(run.classes)))
photo = st.camera_input("Or take a photo") if c2.toggle("Use the camera") else None

inputs = [(f.name, f.getvalue()) for f in files or []]
if photo is not None:
    inputs.append(("camera photo", photo.getvalue()))
if not inputs:
    st.info(f"Drop one or more images. This model knows: {', '.join(run.classes)}.", icon=":material/image:")
    st.stop()

from core.predict import predict  # noqa: E402  (TensorFlow is already loaded with the model)

with st.spinner(f"Classifying {len(inputs)} image(s)…"):
    results = predict(run, [data for _, data in inputs], top_k=top_k, names=[name for name, _ in inputs])

if len(results) > 1:
    table = pd.DataFrame(
        [
            {"file": p.name, "class": p.top[0][0] if p.ok else "", "probability": p.top[0][1] if p.ok else None,
             "note": p.error or ""}
            for p in results
        ]
    )  # fmt: skip
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "probability": st.column_config.ProgressColumn("probability", format="percent", min_value=0, max_value=1)
    })  # fmt: skip
    st.download_button(
        "Download as CSV", table.to_csv(index=False).encode(), "predictions.csv", "text/csv",
        icon=":material/download:",
    )  # fmt: skip

for (name, data), p in zip(inputs, results, strict=True):
    left, right = st.columns([1, 2], vertical_alignment="center")
    if not p.ok:
        left.error(f"**{name}**: {p.error}", icon=":material/broken_image:")
        continue
    left.image(data, caption=name, width="stretch")
    right.markdown(f"**{p.top[0][0]}** · {p.top[0][1]:.1%}")
    right.altair_chart(charts.top_k(p.top), width="stretch")
