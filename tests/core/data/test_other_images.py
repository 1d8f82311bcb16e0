"""A dataset's ``__other__`` folder: images unlike every class, kept apart from the classes for checking "none of
these" (core.evaluate.none_of_these), in either layout, checked like every image, and kept by a saved dataset."""

from __future__ import annotations

import pytest
from conftest import class_entries, jpeg_bytes, make_zip

from core.data.dataset import OTHER, load_dataset
from core.util.errors import UserError


def other_entries(prefix: str = "", n: int = 3) -> dict[str, bytes]:
    return {f"{prefix}{OTHER}/{i}.jpg": jpeg_bytes((128, 128, 128), seed=900 + i) for i in range(n)}


def test_the_other_folder_beside_the_classes_is_no_class(tmp_path):
    entries = class_entries("photos/", per_class=5) | other_entries("photos/") | {f"photos/{OTHER}/bad.jpg": b"no"}
    ds = load_dataset(make_zip(tmp_path / "d.zip", entries), tmp_path / "work")
    assert ds.classes == ["blue", "red"] and len(ds.items) == 10
    assert ds.other == [f"photos/{OTHER}/{i}.jpg" for i in range(3)] and ds.report.other == 3
    assert all((ds.root / p).is_file() for p in ds.other)
    assert [s["file"] for s in ds.report.skipped] == [f"photos/{OTHER}/bad.jpg"]  # checked like every image
    assert ds.report.to_dict()["other"] == 3 and ds.report.total == 10  # not counted among the class images


def test_the_other_folder_beside_the_split_folders_too(tmp_path):
    entries = class_entries("train/", per_class=4) | class_entries("val/", per_class=2) | other_entries()
    ds = load_dataset(make_zip(tmp_path / "split.zip", entries), tmp_path / "work")
    assert ds.report.layout == "split" and ds.classes == ["blue", "red"]
    assert ds.other == [f"{OTHER}/{i}.jpg" for i in range(3)]
    assert not any(s["file"].startswith(OTHER) for s in ds.report.skipped)  # not "left out": kept as other


def test_other_images_do_not_make_a_class(tmp_path):
    entries = class_entries(classes=("red",), per_class=5) | other_entries()
    with pytest.raises(UserError, match="classifier needs at least 2 classes"):
        load_dataset(make_zip(tmp_path / "one.zip", entries), tmp_path / "work")


def test_a_dataset_without_one_has_no_other_images(colour_zip, tmp_path):
    ds = load_dataset(colour_zip, tmp_path / "work")
    assert ds.other == [] and ds.report.other == 0
