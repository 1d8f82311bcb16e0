"""Long tables and galleries a page at a time, so that a page stays light with 100 000 images: only the page on view
is made into a DataFrame and sent to the browser, only its thumbnails are decoded and drawn.

    shown = pager(len(items), GALLERY_PAGE, key, "Images")   # the slice to show; draws "Images 13–24 of 15,000"
    for item in items[shown]: ...
    paged_dataframe(table, key)                                # a DataFrame, PAGE_ROWS rows at a time
    paged_dataframe(items, key, row=lambda it: {...})          # a list: rows are made for the page on view only

The control (the range and total, Previous, the page number, Next) is drawn where ``pager`` is called and only when
there is more than one page. The page on view is view state, ``st.session_state[key]`` (its number, from 1): reruns
and clicks in the list keep it, a reload starts at page 1. A list that shrank (items decided, data deleted) shows its
last page rather than an empty one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

PAGE_ROWS = 500  # table rows per page: enough to scroll and search in, few enough to send on every rerun
# Widget keys, each + the key of the list it pages
PAGE_INPUT = "page_input"
PAGE_PREVIOUS = "page_previous"
PAGE_NEXT = "page_next"


@dataclass(frozen=True)
class Page:
    """One page of a list of ``total`` items: the ``number``-th (from 1) of ``pages``, items ``start`` to ``stop``."""

    number: int
    pages: int
    start: int
    stop: int
    total: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    def caption(self, noun: str) -> str:
        """ "Rows 1,001–1,500 of 100,000 (page 3 of 200)"."""
        if not self.total:
            return f"{noun}: none"
        return f"{noun} {self.start + 1:,}–{self.stop:,} of {self.total:,} (page {self.number:,} of {self.pages:,})"


def page_of(total: int, per_page: int, number: int) -> Page:
    """Page ``number`` of ``total`` items, ``per_page`` a page, clamped to the pages there are: an empty list has
    one empty page, a number past the last page (the list shrank) is the last page."""
    if per_page < 1:
        raise ValueError(f"per_page must be at least 1. Received: per_page={per_page}")
    total = max(0, int(total))
    pages = max(1, -(-total // per_page))
    number = min(max(1, int(number)), pages)
    start = (number - 1) * per_page
    return Page(number, pages, start, min(start + per_page, total), total)


def first_page(key: str) -> None:
    """Show the list under ``key`` from its first page on the next run: a filter's ``on_change``."""
    st.session_state.pop(key, None)


def _go(key: str, number: int) -> None:
    st.session_state[key] = number


def _typed(key: str) -> None:
    st.session_state[key] = st.session_state[f"{PAGE_INPUT}_{key}"]


def _control(page: Page, key: str, noun: str) -> None:
    text, back, number, forward = st.columns([6, 2, 2, 2], vertical_alignment="center")
    text.caption(page.caption(noun))
    back.button("Previous", icon=":material/chevron_left:", key=f"{PAGE_PREVIOUS}_{key}", on_click=_go,
                args=(key, page.number - 1), disabled=page.number == 1, width="stretch")  # fmt: skip
    # The input shows the page on view: set before it is drawn (Previous and Next change the page, not the input).
    st.session_state[f"{PAGE_INPUT}_{key}"] = page.number
    number.number_input("Page", 1, page.pages, step=1, key=f"{PAGE_INPUT}_{key}", on_change=_typed, args=(key,),
                        label_visibility="collapsed", help=f"Page, of {page.pages:,}")  # fmt: skip
    forward.button("Next", icon=":material/chevron_right:", key=f"{PAGE_NEXT}_{key}", on_click=_go,
                   args=(key, page.number + 1), disabled=page.number == page.pages, width="stretch")  # fmt: skip


def pager(total: int, per_page: int, key: str, noun: str = "Rows") -> slice:
    """The slice of the page on view of a list of ``total`` items, ``per_page`` a page; draws its control here when
    there is more than one page. ``key`` names the list's position in session state (and its widgets)."""
    page = page_of(total, per_page, st.session_state.get(key, 1))
    st.session_state[key] = page.number  # clamped: a list that shrank keeps showing rows
    if page.pages > 1:
        _control(page, key, noun)
    return page.rows


def paged_dataframe(
    data: pd.DataFrame | Sequence,
    key: str,
    per_page: int | None = None,
    *,
    row: Callable[[Any], Any] | None = None,
    columns: Sequence[str] | None = None,
    noun: str = "Rows",
    **kwargs: Any,
) -> pd.DataFrame:
    """``st.dataframe`` of one page of ``data`` (``per_page`` rows, PAGE_ROWS by default), its control beneath;
    ``kwargs`` go to st.dataframe. ``data`` is a DataFrame, or a sequence whose shown items become rows through
    ``row`` (the item itself by default) with ``columns``: a long list is never made into rows as a whole. The
    rows keep their place in the whole list as their index. Returns the page's DataFrame."""
    spot = st.container()  # the table above its control, though the control decides which rows it shows
    shown = pager(len(data), per_page or PAGE_ROWS, key, noun)
    if isinstance(data, pd.DataFrame):
        frame = data.iloc[shown]
    else:
        part = data[shown]
        rows = [row(item) for item in part] if row else list(part)
        frame = pd.DataFrame(rows, columns=columns, index=range(shown.start, shown.start + len(rows)))
    spot.dataframe(frame, **kwargs)
    return frame
