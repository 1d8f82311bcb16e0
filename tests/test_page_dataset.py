"""The Dataset page through AppTest: the sample, uploads, skipped files, hostile zips."""

from __future__ import annotations

from conftest import COLORS, class_entries, jpeg_bytes
from pagetest import CLASSES, assert_clean, colour_entries, metrics, open_app, texts, zip_bytes


def test_dataset_page_starts_empty():
    at = open_app()
    assert "No dataset yet" in at.info[0].value
    assert "dataset" not in at.session_state
    assert not at.metric


def test_sample_button_loads_three_classes(work_dir):
    at = open_app()
    at.button(key="use_sample").click().run()
    assert_clean(at)
    ds = at.session_state["dataset"]
    assert ds.classes == ["circle", "square", "triangle"]
    assert metrics(at) == {
        "Classes": "3",
        "Images": "120",
        "Skipped files": "0",
        "Validation images": "held out when training",
    }
    for cls in ds.classes:
        assert f"**{cls}** · 40 images" in texts(at.markdown)
    assert len(at.image) == 3 * 6  # six thumbnails per class
    assert ds.root.is_relative_to(work_dir)
    assert [link.proto.label for link in at.get("page_link")] == ["Next: train a model"]


def test_uploaded_zip_is_read_once_and_keeps_its_name(tmp_path, work_dir):
    at = open_app()
    data = zip_bytes(tmp_path, colour_entries(), "colours.zip")
    at.file_uploader(key="dataset_upload").set_value(("My colours.zip", data, "application/zip")).run()
    assert_clean(at)
    ds = at.session_state["dataset"]
    assert sorted(ds.classes) == sorted(CLASSES)
    assert metrics(at)["Classes"] == "3"
    assert metrics(at)["Images"] == "30"
    assert "My_colours.zip" in texts(at.subheader)  # the user's file name, made file-name safe
    assert ds.root.is_relative_to(work_dir)
    # A rerun (any click) with the same upload does not read the zip again.
    at.run()
    assert at.session_state["dataset"] is ds


def test_skipped_files_are_listed(tmp_path):
    at = open_app()
    entries = {**colour_entries(per_class=4), "red/broken.jpg": b"not a jpeg at all"}
    at.file_uploader(key="dataset_upload").set_value(("c.zip", zip_bytes(tmp_path, entries), "application/zip")).run()
    assert_clean(at)
    assert metrics(at)["Skipped files"] == "1"
    assert [e.label for e in at.expander] == ["Skipped files (1)"]
    assert "broken.jpg" in at.dataframe[1].value.to_string()


def test_hostile_zip_shows_an_error_and_keeps_the_good_dataset(tmp_path, work_dir):
    at = open_app()
    at.file_uploader(key="dataset_upload").set_value(
        ("good.zip", zip_bytes(tmp_path, colour_entries(), "good.zip"), "application/zip")
    ).run()
    good = at.session_state["dataset"]
    evil = {"red/0.jpg": jpeg_bytes(COLORS["red"]), "../evil.txt": b"gotcha"}
    at.file_uploader(key="dataset_upload").set_value(("evil.zip", zip_bytes(tmp_path, evil, "evil.zip"), "x")).run()
    assert_clean(at)  # an error message, not a traceback
    assert len(at.error) == 1
    assert "outside its folder" in at.error[0].value and "../evil.txt" in at.error[0].value
    # A failed upload loses nothing: the dataset loaded before stays, and the message says so.
    assert "The dataset loaded before, **good.zip**, is still in use." in at.error[0].value
    assert at.session_state["dataset"] is good
    assert "good.zip" in texts(at.subheader)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (work_dir.parent / "evil.txt").exists()


def test_a_broken_first_upload_says_so_and_shows_no_dataset(tmp_path):
    at = open_app()
    at.file_uploader(key="dataset_upload").set_value(("notes.zip", b"not a zip at all", "application/zip")).run()
    assert_clean(at)
    assert len(at.error) == 1 and "still in use" not in at.error[0].value
    assert "No dataset yet" in at.info[0].value


def test_class_counts_are_shown_as_numbers(tmp_path):
    at = open_app()
    entries = {**class_entries(classes=("red", "blue"), per_class=3), **class_entries(classes=("green",), per_class=5)}
    at.file_uploader(key="dataset_upload").set_value(("c.zip", zip_bytes(tmp_path, entries), "application/zip")).run()
    assert_clean(at)
    counts = at.dataframe[0].value
    assert counts.to_dict()["images"] == {"blue": 3, "green": 5, "red": 3}
    assert "**green** · 5 images" in texts(at.markdown)


def test_a_zip_with_its_own_split_says_where_validation_images_come_from(tmp_path):
    at = open_app()
    entries = {**class_entries("train/", per_class=4), **class_entries("val/", per_class=2)}
    at.file_uploader(key="dataset_upload").set_value(("s.zip", zip_bytes(tmp_path, entries), "application/zip")).run()
    assert_clean(at)
    assert metrics(at)["Validation images"] == "from its val/ folder"
    counts = at.dataframe[0].value
    assert counts.to_dict()["val"] == {"blue": 2, "red": 2} and counts.to_dict()["total"] == {"blue": 6, "red": 6}
