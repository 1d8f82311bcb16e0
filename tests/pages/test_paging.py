"""ui.paging: the arithmetic of a page (last partial page, empty list, a page past the end clamped) and the control
on a small script through AppTest (Previous / Next / a typed page, a list that shrank, one page drawing nothing)."""

from __future__ import annotations

import pytest
from pagetest import SCRIPT_TIMEOUT, assert_clean, texts
from streamlit.testing.v1 import AppTest

from ui.paging import PAGE_INPUT, PAGE_NEXT, PAGE_PREVIOUS, page_of


def test_a_full_page_and_the_last_partial_one():
    first = page_of(25, 10, 1)
    assert (first.number, first.pages, first.start, first.stop, first.total) == (1, 3, 0, 10, 25)
    assert first.rows == slice(0, 10)
    last = page_of(25, 10, 3)
    assert (last.start, last.stop) == (20, 25) and list(range(25)[last.rows]) == [20, 21, 22, 23, 24]
    assert last.caption("Rows") == "Rows 21–25 of 25 (page 3 of 3)"
    assert page_of(100_000, 500, 3).caption("Rows") == "Rows 1,001–1,500 of 100,000 (page 3 of 200)"
    exact = page_of(20, 10, 2)
    assert (exact.pages, exact.start, exact.stop) == (2, 10, 20)


def test_an_empty_list_has_one_empty_page():
    empty = page_of(0, 10, 1)
    assert (empty.number, empty.pages, empty.start, empty.stop) == (1, 1, 0, 0)
    assert list(range(0)[empty.rows]) == [] and empty.caption("Rows") == "Rows: none"
    assert page_of(0, 10, 7).number == 1


def test_a_page_out_of_range_is_clamped():
    shrank = page_of(12, 10, 3)  # page 3 was on view, then the list shrank to 12 items
    assert (shrank.number, shrank.start, shrank.stop) == (2, 10, 12)
    assert page_of(12, 10, 0).number == 1 and page_of(12, 10, -4).start == 0
    with pytest.raises(ValueError, match="per_page"):
        page_of(12, 0, 1)


def script():
    import streamlit as st

    from ui import paging

    n = st.session_state.get("n", 25)
    shown = paging.pager(n, 10, "items", "Items")
    for i in range(n)[shown]:
        st.markdown(f"item {i}")
    paging.paged_dataframe([{"n": i} for i in range(n)], "table", 7, hide_index=True)


def items(at) -> list[int]:
    return [int(m.split()[1]) for m in texts(at.markdown)]


def test_the_control_steps_jumps_and_follows_a_list_that_shrank():
    at = AppTest.from_function(script, default_timeout=SCRIPT_TIMEOUT).run()
    assert_clean(at)
    assert items(at) == list(range(10))
    assert texts(at.caption) == ["Items 1–10 of 25 (page 1 of 3)", "Rows 1–7 of 25 (page 1 of 4)"]
    assert at.button(key=f"{PAGE_PREVIOUS}_items").disabled and not at.button(key=f"{PAGE_NEXT}_items").disabled
    assert list(at.dataframe[0].value["n"]) == list(range(7))

    at.button(key=f"{PAGE_NEXT}_items").click().run()
    assert items(at) == list(range(10, 20)) and at.number_input(key=f"{PAGE_INPUT}_items").value == 2
    at.number_input(key=f"{PAGE_INPUT}_items").set_value(3).run()
    assert_clean(at)
    assert items(at) == list(range(20, 25)) and at.button(key=f"{PAGE_NEXT}_items").disabled
    assert texts(at.caption)[0] == "Items 21–25 of 25 (page 3 of 3)"
    at.button(key=f"{PAGE_PREVIOUS}_items").click().run()
    assert items(at) == list(range(10, 20))
    at.number_input(key=f"{PAGE_INPUT}_table").set_value(4).run()
    table = at.dataframe[0].value
    assert list(table["n"]) == [21, 22, 23, 24] and list(table.index) == [21, 22, 23, 24]  # their place in the list
    assert items(at) == list(range(10, 20))  # each list keeps its own page

    at.session_state["n"] = 12  # the lists shrank: each shows its last page, not an empty one
    at.run()
    assert_clean(at)
    assert items(at) == [10, 11] and list(at.dataframe[0].value["n"]) == [7, 8, 9, 10, 11]
    assert texts(at.caption) == ["Items 11–12 of 12 (page 2 of 2)", "Rows 8–12 of 12 (page 2 of 2)"]

    at.session_state["n"] = 5  # one page: everything, and no control
    at.run()
    assert_clean(at)
    assert items(at) == list(range(5)) and len(at.dataframe[0].value) == 5
    assert not at.caption and not at.button and not at.number_input
