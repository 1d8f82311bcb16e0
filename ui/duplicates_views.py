"""Duplicates and leaks on the pages: the Dataset page's section (counts, pairs side by side) and Evaluate's warning.

    duplicates_section(ds)            # Dataset page: the report; or the search as a job, asked for, with its progress
    leak_warning(run.path, ev.split)  # Evaluate page: a warning when the scored images duplicate training images

The work is core.data.duplicates'. For a saved dataset it runs as a job (kind ``duplicates``, core.jobs.work), not in
the page's script run: hashing 100 000 images takes minutes and comparing their 5 billion pairs tens of seconds. The
report is kept beside the dataset (``duplicates.kept``, valid for that version and that hashing) and with the job.
The address names the dataset (``?dataset=<id>``), and the dataset finds its report, or its job and the job's
progress, again: after a reload, in another tab or a colleague's, after a restart of the server.

Decision: the search starts when asked (*Look for duplicates*), not by itself on the first look at a dataset,
although that would spare a click. The Dataset page is where the app opens and its list is browsed: every dataset
looked at would queue a search; a queued or running job holds its dataset, so one could not be deleted right after a
look at it (the delete says to stop the job first), nor while its search waits behind someone's training; and with
one job slot (2 cores) a search started by a glance would delay the training asked for next, by minutes at 100 000
images. Training hashes the images too (its check of the split): after a training the report of a dataset of up to
``INLINE_IMAGES`` images shows without asking, and a larger one's search only compares. Two tabs asking together get
one job (``submit_task(..., once=True)`` decides in the same write as the insert), and a search that failed or was
stopped says so and offers to start again. The job is its starter's, as a training is: anyone may start one on any
saved dataset (the hashes and the report are derived files, nobody's dataset changes), only its starter or an admin
may stop it (core.workspace.access).

With the hashes on disk already and at most ``INLINE_IMAGES`` images, the comparison alone takes well under a
second: it is done in the page, not queued behind a worker's start. A dataset read straight from a zip or a folder
(no id: tools and tests) is hashed in the page with a progress bar, as a job can only open a saved dataset.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.data import duplicates, hashes
from core.data.dataset import Dataset
from core.evaluate import leaks
from core.imaging import pillow as images
from core.jobs.kinds import DUPLICATES
from core.jobs.registry import registry
from core.jobs.states import COMPLETED, FAILED, INTERRUPTED, JobSnapshot
from core.util.errors import UserError
from ui import session, tasks
from ui.session import ProgressBar, escape, plural

PAIRS_SHOWN = 8  # pairs drawn with thumbnails; the table below them lists every pair kept
THUMB_SIZE = 160
EXPANDER = "Duplicate pairs"  # the expander's label starts with this (tests find the thumbnails by it)
PART = {"val": "validation", "test": "test"}
INLINE_IMAGES = 10_000  # hashes on disk and at most this many images: compared in the page (50 M pairs, ~0.4 s)
START = "duplicates_start"  # the button's key, + the dataset's id


@st.cache_data(show_spinner=False, max_entries=500)
def thumbnail(path: str):
    """The whole image (padded, not cropped: a crop could hide what makes two images differ)."""
    return images.thumbnail(path, THUMB_SIZE, "pad")


@st.cache_data(show_spinner=False, max_entries=20)
def _kept(dataset_id: str, version: int, stamp: int, _ds: Dataset) -> duplicates.DuplicateReport | None:
    # A version of a saved dataset never changes; ``stamp`` (the file's time) sees a report written since.
    return duplicates.kept(_ds)


@st.cache_data(show_spinner=False, max_entries=20)
def _compared(dataset_id: str, version: int, _ds: Dataset) -> duplicates.DuplicateReport:
    return duplicates.find_duplicates(_ds)  # the hashes are on disk: compares, and keeps the report


def _kept_report(ds: Dataset) -> duplicates.DuplicateReport | None:
    try:
        stamp = (Path(ds.store) / duplicates.REPORT_FILE).stat().st_mtime_ns
    except OSError:
        return None
    return _kept(ds.id, ds.version, stamp, ds)


def _in_page(ds: Dataset) -> duplicates.DuplicateReport:
    """A dataset without an id: hashed here, with a progress bar."""
    bar = ProgressBar("Looking for duplicates")
    try:
        return duplicates.find_duplicates(ds, bar)
    finally:
        bar.empty()


def _ask(ds: Dataset) -> None:
    # A callback: the job is queued before the page reruns, which then draws its progress. Two tabs pressing at
    # once get the same job.
    try:
        snap = registry().submit_task(DUPLICATES, {}, owner=session.user(), dataset=ds, once=True)
    except UserError as exc:  # the workspace database cannot be written
        session.flash(str(exc), error=True)
        return
    session.started(snap.id)


def _offer(ds: Dataset) -> None:
    n = len(ds.items)
    st.caption(
        f"Not searched yet in this version of the dataset. The server hashes its {plural(n, 'image')} (once: a "
        f"training needs the same hashes), then compares every pair ({n * (n - 1) // 2:,}) for exact and near "
        "duplicates, leaks across train/val/test and conflicting labels; other pages can be used meanwhile."
    )
    _button(ds)


def _button(ds: Dataset) -> None:
    st.button("Look for duplicates", icon=":material/content_copy:", key=f"{START}_{ds.id}", on_click=_ask,
              args=(ds,))  # fmt: skip


def _ended(ds: Dataset, snap: JobSnapshot) -> None:
    """A search that ended without a report: why, and a button to look again."""
    if snap.state == FAILED:
        session.error(snap.error or "The duplicate search failed.", icon=":material/error:")
    else:
        how = "was interrupted: the server stopped while it ran" if snap.state == INTERRUPTED else "was stopped"
        st.info(f"The duplicate search {how}. A new one hashes only the images it had not saved.",
                icon=":material/pause_circle:")  # fmt: skip
    _button(ds)


def _found(ds: Dataset) -> duplicates.DuplicateReport | None:
    """The report to show; None while the job searches (its progress drawn) or after one that ended without."""
    if not ds.id:
        return _in_page(ds)
    if (found := _kept_report(ds)) is not None:
        return found
    snap = registry().latest(DUPLICATES, ds)
    if snap is None:
        if len(ds.items) <= INLINE_IMAGES and hashes.cached(ds):
            return _compared(ds.id, ds.version, ds)
        _offer(ds)
        return None
    if not snap.finished:
        st.caption(
            "Looking for exact and near duplicates, once for this version of the dataset: every image is hashed, "
            "then every pair compared. It runs on the server; other pages can be used meanwhile."
        )
        tasks.running(snap.id)
        return None
    if snap.state == COMPLETED and snap.result:
        return duplicates.DuplicateReport.from_dict(snap.result)  # its folder could not keep the report
    _ended(ds, snap)
    return None


def duplicates_section(ds: Dataset) -> None:
    """Counts, what they mean, and the pairs with their thumbnails side by side (leaks first)."""
    st.subheader("Duplicates")
    found = _found(ds)
    if found is None:
        return
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
