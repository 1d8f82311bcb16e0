"""Dataset: upload a zip of class folders (or take the sample) and see what is in it."""

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from core import UserError
from core.dataset import load_dataset
from core.images import load_image
from core.sample import make_sample_zip
from ui import charts, session
from ui.session import DATASET, DATASET_KEY, UPLOAD, USE_SAMPLE, ProgressBar, plural, session_dir

THUMBS_PER_CLASS = 6
THUMB_SIZE = 128


def ingest(path, key: str) -> None:
    """Load the zip; on a user error keep the dataset loaded before, and say so."""
    bar = ProgressBar("Reading the dataset")
    try:
        st.session_state[DATASET] = load_dataset(path, session_dir(), progress=bar)
    except UserError as exc:
        previous = st.session_state.get(DATASET)
        kept = f" The dataset loaded before, **{previous.report.source}**, is still in use." if previous else ""
        st.error(f"{exc}{kept}", icon=":material/error:")
    finally:
        st.session_state[DATASET_KEY] = key  # the same file is not read again on every rerun
        bar.empty()


session.page()
st.title("Dataset")
st.markdown(
    "Put your photos in **one folder per class** (`cats/…`, `dogs/…`), zip them and drop the zip here. "
    "A `train/` + `val/` split inside the zip is used as given."
)
left, right = st.columns([3, 1], vertical_alignment="center")
upload = left.file_uploader("Zip of class folders", type=["zip"], key=UPLOAD)
use_sample = right.button("Use the sample dataset", key=USE_SAMPLE, icon=":material/science:")

if use_sample:
    ingest(make_sample_zip(session_dir() / "sample.zip"), "sample")
elif upload is not None and st.session_state.get(DATASET_KEY) != upload.file_id:
    # Keep the user's file name: it names the dataset on every page and the runs trained on it.
    name = re.sub(r"[^\w.-]+", "_", Path(upload.name).name).strip("._") or "upload.zip"
    target = session_dir() / "upload" / name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(upload.getbuffer())
    ingest(target, upload.file_id)

ds = st.session_state.get(DATASET)
if ds is None:
    st.info("No dataset yet: drop a zip above, or press **Use the sample dataset** to try the app.")
    st.stop()

report = ds.report
st.subheader(report.source)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Classes", len(report.classes))
c2.metric("Images", f"{report.total:,}")
c3.metric("Skipped files", len(report.skipped))
c4.metric("Validation images", "from its val/ folder" if report.layout == "split" else "held out when training")
for warning in report.warnings:
    st.warning(warning, icon=":material/warning:")

counts = pd.DataFrame(report.counts).T.fillna(0).astype(int).rename(columns={"all": "images"}).rename_axis("class")
if len(counts.columns) > 1:
    counts["total"] = counts.sum(axis=1)
chart, table = st.columns([3, 2])
chart.altair_chart(charts.class_counts(report.counts), width="stretch")
table.dataframe(counts, width="stretch")

if report.image_sizes:
    s = report.image_sizes
    st.caption(
        f"Image sizes: width {s['min_width']:g}–{s['max_width']:g} px (median {s['median_width']:g}), "
        f"height {s['min_height']:g}–{s['max_height']:g} px (median {s['median_height']:g})."
    )
if report.skipped:
    with st.expander(f"Skipped files ({len(report.skipped)})"):
        st.dataframe(pd.DataFrame(report.skipped), hide_index=True, width="stretch")

st.subheader("Examples")
for label, cls in enumerate(ds.classes):
    paths = [ds.root / it.path for it in ds.items if it.label == label][:THUMBS_PER_CLASS]
    st.markdown(f"**{cls}** · {plural(sum(it.label == label for it in ds.items), 'image')}")
    for col, path in zip(st.columns(THUMBS_PER_CLASS), paths, strict=False):
        # The thumbnail is the model's own view of the image: the same crop/pad as training.
        col.image(load_image(path, THUMB_SIZE), caption=path.name, width="stretch")

st.page_link("pages/train.py", label="Next: train a model", icon=":material/arrow_forward:")
