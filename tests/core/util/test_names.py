"""Names people give things: a class, a dataset, a description never carries a line break or a hidden character
into labels.txt or a page."""

from __future__ import annotations

import pytest
from conftest import class_entries, jpeg_bytes, make_zip
from hypothesis import given, settings
from hypothesis import strategies as st

from core.data.dataset import load_dataset
from core.util import names
from core.util.errors import UserError
from core.workspace import datasets, records

BAD = [
    "a\nb",
    "a\rb",
    "a\x85b",
    "a\u2028b",
    "a\u2029b",
    "a\x0bb",
    "a\x07b",
    "a\x1bb",
    "a\u202eb",
    "a\u2066b",
    "\ufeffa",
]


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=30))
def test_a_name_that_passes_is_one_line_of_visible_text(name):
    if names.problem(name) is None:
        assert len(name.splitlines()) <= 1 and "\n" not in "".join(name.splitlines())
        assert name == "".join(f"{name}\n".splitlines())  # one line of labels.txt, read back the same
        assert not any(ch in name for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    else:
        with pytest.raises(UserError, match=r"contains .+ \(U\+[0-9A-F]{4,}.*\): remove it and try again\.$"):
            names.check(name, "The class folder")


@pytest.mark.parametrize("good", ["ants", "café", "Ölbaum", "猫", "кошка", "👩‍👩‍👧 family", "a b", "bees (2)"])
def test_names_of_any_script_and_emoji_are_fine(good):
    assert names.check(good, "The class folder") == good


@pytest.mark.parametrize("bad", BAD)
def test_a_class_folder_with_a_line_break_or_control_character_is_refused_in_words(bad, tmp_path):
    entries = {
        **class_entries(classes=("red", "blue"), per_class=2),
        f"{bad}/x.jpg": jpeg_bytes(),
        f"{bad}/y.jpg": jpeg_bytes(seed=1),
    }
    with pytest.raises(UserError, match=r"^The class folder .\S*. contains .+: remove it and try again\.$"):
        load_dataset(make_zip(tmp_path / "bad.zip", entries), tmp_path / "work")


@pytest.mark.parametrize("bad", ["a\x07b", "a\u202eb", "\ufeffname"])
def test_a_dataset_name_with_a_hidden_character_is_refused_and_a_line_break_becomes_a_space(bad, tmp_path):
    zipped = make_zip(tmp_path / "ok.zip", class_entries(per_class=2))
    with pytest.raises(UserError, match=r"^The dataset name .+ contains"):
        datasets.save_zip(zipped, bad)
    saved = datasets.save_zip(zipped, "ants\u2028bees")
    assert saved.name == "ants bees"
    with pytest.raises(UserError, match=r"^The dataset name .+ contains"):
        datasets.rename(saved.id, bad, "")
    assert records.get(saved.id).name == "ants bees"
