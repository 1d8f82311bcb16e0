"""Duplicates and leaks on the pages: the Dataset page's section (counts, pairs side by side) and Evaluate's warning.

    duplicates_section(ds)            # Dataset page: hashed once per saved dataset (a progress bar the first time)
    leak_warning(run.path, ev.split)  # Evaluate page: a warning when the scored images duplicate training images

The work is core.data.duplicates'; the hashes are kept beside the saved dataset, so a rerun, a reload or another
user's visit reads them (and the report is kept per dataset in this server process) instead of decoding again.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.data import duplicates, hashes
from core.data.dataset import Dataset
from core.evaluate import leaks
from core.imaging import pillow as images
from core.workspace import datasets
from ui.session import ProgressBar, escape, plural

PAIRS_SHOWN = 8  # pairs drawn with thumbnails; the table below them lists every pair kept
THUMB_SIZE = 160
EXPANDER = "Duplicate pairs"  # the expander's label starts with this (tests find the thumbnails by it)
PART = {"val": "validation", "test": "test"}


@st.cache_data(show_spinner=False, max_entries=500)
def thumbnail(path: str):
    """The whole image (padded, not cropped: a crop could hide what makes two images differ)."""
    return images.thumbnail(path, THUMB_SIZE, "pad")


@st.cache_data(show_spinner=False, max_entries=20)
def _report(dataset_id: str) -> duplicates.DuplicateReport:
    # A saved dataset never changes under its id (it is its zip's content), so its report is kept per id.
    return duplicates.find_duplicates(datasets.open_dataset(dataset_id, touch=False))


def _found(ds: Dataset) -> duplicates.DuplicateReport:
    if not hashes.cached(ds):
        bar = ProgressBar("Looking for duplicates (once for this dataset)")
        try:
            hashes.dataset_hashes(ds, bar)
        finally:
            bar.empty()
    return _report(ds.id) if ds.id else duplicates.find_duplicates(ds)


def duplicates_section(ds: Dataset) -> None:
    """Counts, what they mean, and the pairs with their thumbnails side by side (leaks first)."""
    st.subheader("Duplicates")
    found = _found(ds)
    lines = found.summary()
    if not found.pairs_total:
        st.caption(lines[0])
        return
    st.markdown(lines[0])
    for line in lines[1:]:
        if "(a leak)" in line:
            st.warning(line, icon=":material/warning:")
        elif "(conflicting labels)" in line:
            st.warning(line, icon=":material/label_off:")
        else:
            st.caption(line)
    if not ds.has_split:
        st.caption(
            "This dataset's validation images are drawn when training; training leaves out of validation the images "
            "that duplicate a training image (*Drop validation images that duplicate training images*, on by default)."
        )
    with st.expander(f"{EXPANDER} ({found.pairs_total:,})"):
        for pair in found.pairs[:PAIRS_SHOWN]:
            _pair(ds, pair)
        if found.pairs_total > PAIRS_SHOWN:
            listed = f"; the table lists {len(found.pairs):,}" if len(found.pairs) > PAIRS_SHOWN else ""
            st.caption(f"And {plural(found.pairs_total - PAIRS_SHOWN, 'more pair')}{listed}.")
        if len(found.pairs) > PAIRS_SHOWN:
            table = pd.DataFrame([p.to_dict() for p in found.pairs])
            columns = ["relation", "kind", "distance", "a", "class_a", "split_a", "b", "class_b", "split_b"]
            st.dataframe(table[columns], hide_index=True, width="stretch")


def _pair(ds: Dataset, pair: duplicates.Pair) -> None:
    left, right, about = st.columns([1, 1, 2])
    for column, path, cls, part in ((left, pair.a, pair.class_a, pair.split_a), (right, pair.b, pair.class_b,
                                                                                  pair.split_b)):  # fmt: skip
        where = f"{cls}" + (f" · {part}" if part else "")
        try:
            column.image(thumbnail(str(ds.root / path)), caption=f"{path} ({where})", width="stretch")
        except Exception:  # a file gone or damaged since: the pair is still listed
            column.caption(f"{escape(path)} ({where}): cannot be shown")
    how = "same pixels" if pair.kind == "exact" else f"near duplicate, {pair.distance} of 128 bits differ"
    about.markdown(f"**{pair.relation.capitalize()}** · {how}")


def leak_warning(run_path, part: str = "val") -> None:
    """A warning when some of the run's held-out images (``part``: "val" or "test") duplicate training images.

    Nothing for a run that cannot tell (trained before this check, its dataset's hashes not on disk).
    """
    found = leaks.held_out_duplicates(run_path, part)
    if not found or not found[0]:
        return
    n, total = found
    what = PART.get(part, part)
    verb = "duplicates" if n == 1 else "duplicate"
    text = f"{n} of {total} {what} images {verb} training images: the {what} accuracy is likely optimistic."
    if part == "val" and (limit := leaks.over_limit(run_path)) is not None:
        text += (
            f" Training kept them: that is more than the {limit:.0%} of validation the check drops on its own, and "
            "so many look-alikes are more often distinct images with little detail than real copies. Look at the "
            "pairs on the Dataset page; if they are copies, train again with a higher “Drop at most this share of "
            "validation”."
        )
    st.warning(text, icon=":material/content_copy:")
