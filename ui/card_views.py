"""The model card on the Runs page: what the model is for (in its owner's words), the card itself, its downloads.

    card_section(run)    # an expander under the run's details; run is a core.workspace.runs.RunInfo

The card is built from the run's json files by ``core.publish.card`` on each script run (no TensorFlow, the model
file's checksum is computed once per process); the downloads are built only when clicked.
"""

from __future__ import annotations

from functools import partial

import streamlit as st

from core.publish.card import facts, figures, render
from core.util.errors import UserError
from core.workspace import access
from core.workspace.runs import RunInfo
from ui import session

# Widget keys, each followed by the run's id: every run keeps its own text while the page is open.
PURPOSE = "card_purpose_"
SAVE = "card_save_"
DOWNLOAD_MARKDOWN = "card_markdown_"
DOWNLOAD_HTML = "card_html_"
# The preview puts the confusion matrix where the card names this file, with st.image.
PREVIEW_IMAGE = render.IMAGE_FILE


def card_section(run: RunInfo) -> None:
    """An expander "Model card": the purpose text area and Save (for whoever may change the run), two downloads
    (Markdown, printable HTML) and a preview of the card."""
    with st.expander("Model card", icon=":material/badge:"):
        _purpose(run)
        try:
            text = render.markdown(run.path, image_name=PREVIEW_IMAGE)
            png = figures.confusion_png(run.path)
        except UserError as exc:  # a damaged run: say which file, show no half card
            session.error(exc, icon=":material/error:")
            return
        left, right = st.columns(2)
        left.download_button(
            "Download card (Markdown)",
            partial(render.markdown, run.path, image_name=None),  # the matrix as a table: one file stands alone
            f"{run.id}-{render.MARKDOWN_FILE}",
            "text/markdown",
            key=DOWNLOAD_MARKDOWN + run.id,
            icon=":material/download:",
        )
        right.download_button(
            "Download printable card (HTML)",
            partial(render.html, run.path),
            f"{run.id}-{render.HTML_FILE}",
            "text/html",
            key=DOWNLOAD_HTML + run.id,
            icon=":material/print:",
        )
        with st.container(border=True):
            before, found, after = text.partition(render.image_markdown(PREVIEW_IMAGE))
            st.markdown(before)
            if found and png:
                st.image(png, caption="Confusion matrix")
            if after.strip():
                st.markdown(after)


def _purpose(run: RunInfo) -> None:
    user = session.user()
    allowed = access.may_change(user, run.owner)
    text = st.text_area(
        "What this model is for",
        value=facts.purpose(run.path),
        max_chars=facts.MAX_PURPOSE,
        placeholder="Who uses it, on which photos, for which decision; and what it must not be used for.",
        key=PURPOSE + run.id,
        disabled=not allowed,
    )
    if not allowed:
        st.caption(f"Only {session.escape(access.display(run.owner))} or an admin may change what this model is for.")
    if st.button("Save", key=SAVE + run.id, disabled=not allowed, icon=":material/save:"):
        try:
            facts.set_purpose(run.path, text, user)
        except UserError as exc:  # e.g. the run was deleted, or its owner changed, since the page was drawn
            session.error(exc, icon=":material/error:")
        else:
            st.success("Saved: the card below says so, for everyone.", icon=":material/check_circle:")
