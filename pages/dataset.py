"""Dataset: upload a zip of class folders (or take the sample), keep it on the server, and see what is in it.

Every dataset is saved once on the server (core.workspace.datasets) and named in the address (``?dataset=<id>``): a
reload, a new tab or a colleague's link shows the same one. The saved datasets are listed with who added them; their
owner (or an admin, or anyone for what a guest added) may rename or delete them.
"""

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data.sample import make_sample_zip
from core.imaging.pillow import thumbnail
from core.util.errors import UserError
from core.util.text import human_size
from core.workspace import records
from ui import charts, paging, session
from ui.datasets_views import ingest, label, manage, pending, when, who
from ui.duplicates_views import duplicates_section
from ui.review_inputs import add_images_section
from ui.session import (
    DATASET_KEY,
    UPLOAD,
    USE_SAMPLE,
    plural,
    session_dir,
)
from ui.versions_views import versions_section

THUMBS_PER_CLASS = 6
THUMB_SIZE = 128
SAVED_PAGE = "saved_datasets_page"  # session state: the page of the saved datasets on view (ui.paging)
SKIPPED_PAGE = "skipped_files_page"  # + the dataset's id: the page of its skipped files


session.page()
st.title("Dataset")
st.markdown(
    "Put your photos in **one folder per class** (`cats/…`, `dogs/…`), zip them and drop the zip here. "
    "A `train/` + `val/` split inside the zip is used as given. Every dataset is kept on this server, once, "
    "for everyone on it."
)
left, right = st.columns([3, 1], vertical_alignment="center")
upload = left.file_uploader("Zip of class folders", type=["zip"], key=UPLOAD)
use_sample = right.button("Use the sample dataset", key=USE_SAMPLE, icon=":material/science:")

if use_sample:
    # The sample is drawn the same, byte for byte, every time: every session gets the one saved sample.
    ingest(make_sample_zip(session_dir() / "sample.zip"), "sample")
elif upload is not None and st.session_state.get(DATASET_KEY) != upload.file_id:
    # Keep the user's file name: it names the dataset on every page and the runs trained on it.
    name = re.sub(r"[^\w.-]+", "_", Path(upload.name).name).strip("._") or "upload.zip"
    target = session_dir() / "upload" / name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(upload.getbuffer())
    ingest(target, upload.file_id)
pending()  # an upload that would remove least recently used datasets waits for the user to accept it

ds = session.dataset()
try:
    saved_list = records.list_datasets()
except UserError as exc:
    session.error(exc, icon=":material/error:")
    st.stop()
if not saved_list:
    st.info("No dataset yet: drop a zip above, or press **Use the sample dataset** to try the app.")
    st.stop()

st.subheader("Saved datasets")
by_id = {s.id: s for s in saved_list}
paging.paged_dataframe(
    saved_list,
    SAVED_PAGE,
    row=lambda s: {
        "name": s.name,
        "classes": s.classes,
        "images": s.images,
        "size": human_size(s.bytes),
        "added": when(s.added),
        "by": who(s.added_by),
        "last used": when(s.last_used),
    },
    noun="Datasets",
    hide_index=True,
    width="stretch",
)
current = ds.id if ds is not None and ds.id in by_id else None
picked = st.selectbox(
    "Show",
    list(by_id),
    index=list(by_id).index(current) if current else None,
    format_func={item.id: label(item) for item in saved_list}.get,
    placeholder="Choose a saved dataset",
)
if picked and picked != current:
    st.query_params[session.DATASET_PARAM] = picked
    ds = session.dataset()
if ds is None:
    st.info("Choose a saved dataset above, drop a zip, or press **Use the sample dataset**.")
    st.stop()

report = ds.report
st.subheader(session.escape(ds.title))
if saved := by_id.get(ds.id):
    st.caption(
        f"From {session.escape(saved.source)} · added {when(saved.added)} by {session.escape(who(saved.added_by))} · "
        f"{human_size(saved.bytes)} on the server · id `{saved.id}`"
    )
    manage(saved)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Classes", len(report.classes))
c2.metric("Images", f"{report.total:,}")
c3.metric("Skipped files", len(report.skipped))
c4.metric("Validation images", "from its val/ folder" if report.layout == "split" else "held out when training")
for warning in report.warnings:
    st.warning(warning, icon=":material/warning:")
if report.other:
    st.caption(
        f"{plural(report.other, '“other” image')} in its `__other__` folder: not a class, but examples of what a "
        "model should answer “none of these” for. Evaluate checks that it does."
    )

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
        paging.paged_dataframe(report.skipped, f"{SKIPPED_PAGE}_{ds.id}", hide_index=True, width="stretch")
versions_section(ds)  # its versions: who changed what, and the validation images each one adds

st.subheader("Examples")
examples, per_class = [[] for _ in ds.classes], [0] * len(ds.classes)
for it in ds.items:  # one pass over the images, however many classes: a few per class are shown
    per_class[it.label] += 1
    if len(examples[it.label]) < THUMBS_PER_CLASS:
        examples[it.label].append(ds.root / it.path)
for cls, paths, n in zip(ds.classes, examples, per_class, strict=True):
    st.markdown(f"**{session.escape(cls)}** · {plural(n, 'image')}")
    for col, path in zip(st.columns(THUMBS_PER_CLASS), paths, strict=False):
        # The thumbnail is the model's own view of the image: the same crop/pad as training.
        col.image(thumbnail(path, THUMB_SIZE), caption=path.name, width="stretch")

duplicates_section(ds)  # exact and near duplicates, leaks and conflicting labels (hashed once per dataset)
add_images_section(ds)  # more images of a class, without a zip: through the review queue
st.page_link("pages/train.py", label="Next: train a model", icon=":material/arrow_forward:")
