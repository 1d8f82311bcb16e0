"""The Dataset page through AppTest: the sample, uploads saved on the server, the address, the saved datasets
(pick, rename, delete, who may), skipped files, hostile zips."""

from __future__ import annotations

from conftest import COLORS, class_entries, jpeg_bytes, make_zip
from pagetest import (
    APP,
    CLASSES,
    SCRIPT_TIMEOUT,
    assert_clean,
    button,
    colour_entries,
    metrics,
    open_app,
    texts,
    zip_bytes,
)
from streamlit.testing.v1 import AppTest

from core.workspace import datasets, records
from core.workspace.runs import MARKER, RUN_FORMAT, runs_dir, write_json

UNKNOWN = "0123456789abcdef"


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="dataset_upload").set_value((name, data, "application/zip")).run()
    return at


def saved_table(at: AppTest):
    return at.dataframe[0].value


def picker(at: AppTest):
    (found,) = [s for s in at.selectbox if s.label == "Show"]
    return found


ISSUER = "https://id.example.com"


def key(email: str) -> str:
    """The user key core.workspace.access gives the user signed_in(email) signs in."""
    return f"{ISSUER}|id-{email}"


def signed_in(email: str, query: dict | None = None) -> AppTest:
    """The Dataset page as a signed-in user sees it."""
    at = AppTest.from_file(APP, default_timeout=SCRIPT_TIMEOUT)
    at.user = {"is_logged_in": True, "email": email, "sub": f"id-{email}", "iss": ISSUER}
    at.query_params.update(query or {})
    at.run()
    assert_clean(at)
    return at


def test_dataset_page_starts_empty():
    at = open_app()
    assert "No dataset yet" in at.info[0].value
    assert "dataset" not in at.session_state
    assert "dataset" not in at.query_params
    assert not at.metric


def test_sample_button_saves_the_sample_once_and_names_it_in_the_address(work_dir):
    at = open_app()
    at.button(key="use_sample").click().run()
    assert_clean(at)
    dataset_id = at.session_state["dataset"]
    assert isinstance(dataset_id, str) and at.query_params["dataset"] == dataset_id
    ds = datasets.open_dataset(dataset_id)
    assert ds.classes == ["circle", "square", "triangle"]
    assert metrics(at) == {
        "Classes": "3",
        "Images": "120",
        "Skipped files": "0",
        "Validation images": "held out when training",
    }
    for cls in ds.classes:
        assert f"**{cls}** · 40 images" in texts(at.markdown)
    duplicate_pairs = [i for e in at.expander if e.label.startswith("Duplicate pairs") for i in e.image]
    assert len(at.image) - len(duplicate_pairs) == 3 * 6  # six thumbnails per class
    assert ds.root.is_relative_to((work_dir / "datasets" / dataset_id).resolve())
    assert [link.proto.label for link in at.get("page_link")] == ["Next: train a model"]
    assert list(saved_table(at)["name"]) == ["sample.zip"]
    # The sample is the same zip every time: pressing again, even in another session, adds nothing.
    other = open_app()
    other.button(key="use_sample").click().run()
    assert other.session_state["dataset"] == dataset_id
    assert [s.id for s in records.list_datasets()] == [dataset_id]
    assert not list((work_dir / at.session_state["session_id"]).rglob("*.zip"))  # the staged zip is gone


def test_an_upload_is_saved_listed_and_read_once(tmp_path, work_dir):
    at = open_app()
    upload(at, "My colours.zip", zip_bytes(tmp_path, colour_entries(), "colours.zip"))
    assert_clean(at)
    dataset_id = at.session_state["dataset"]
    assert at.query_params["dataset"] == dataset_id
    ds = at.session_state["dataset_opened"]
    assert sorted(ds.classes) == sorted(CLASSES)
    assert metrics(at)["Classes"] == "3" and metrics(at)["Images"] == "30"
    assert "My_colours.zip" in texts(at.subheader)  # the user's file name, made file-name safe
    table = saved_table(at)
    assert list(table["name"]) == ["My_colours.zip"]
    assert (table["classes"][0], table["images"][0], table["by"][0]) == (3, 30, "a guest")
    assert picker(at).value == dataset_id
    assert not list((work_dir / at.session_state["session_id"] / "upload").iterdir())  # the staged upload is gone
    # A rerun (any click) with the same upload reads neither the zip nor the saved dataset again.
    at.run()
    assert at.session_state["dataset_opened"] is ds


def test_a_link_with_the_dataset_opens_it_in_a_fresh_session(tmp_path):
    first = open_app()
    upload(first, "colours.zip", zip_bytes(tmp_path, colour_entries()))
    dataset_id = first.session_state["dataset"]
    at = open_app("pages/dataset.py", query={"dataset": dataset_id})
    assert at.session_state["dataset"] == dataset_id
    assert "colours.zip" in texts(at.subheader)
    assert metrics(at)["Images"] == "30"


def test_an_unknown_dataset_in_the_link_says_so_and_lists_the_saved_ones(tmp_path):
    datasets.save_zip(make_zip(tmp_path / "colours.zip", colour_entries()))
    at = open_app("pages/dataset.py", query={"dataset": UNKNOWN})
    assert len(at.error) == 1
    assert at.error[0].value.startswith(
        f"There is no saved dataset **{UNKNOWN}** on this server: it was deleted, or the link is mistyped."
    )
    assert list(saved_table(at)["name"]) == ["colours.zip"]
    assert "dataset" not in at.query_params
    assert "Choose a saved dataset above" in at.info[0].value
    assert not at.metric


def test_a_link_that_is_not_an_id_shows_nothing_of_it(tmp_path):
    at = open_app("pages/dataset.py", query={"dataset": "../../etc/[x](http://evil)"})
    assert len(at.error) == 1 and "evil" not in at.error[0].value
    assert "that the link names" in at.error[0].value


def test_picking_a_saved_dataset_puts_it_in_the_address(tmp_path):
    a = datasets.save_zip(make_zip(tmp_path / "a.zip", class_entries(per_class=3)))
    b = datasets.save_zip(make_zip(tmp_path / "b.zip", colour_entries(per_class=4)))
    at = open_app("pages/dataset.py", query={"dataset": a.id})
    assert "a.zip" in texts(at.subheader)
    picker(at).set_value(b.id).run()
    assert_clean(at)
    assert at.query_params["dataset"] == b.id and at.session_state["dataset"] == b.id
    assert "b.zip" in texts(at.subheader) and metrics(at)["Images"] == "12"


def test_the_address_keeps_the_dataset_on_other_pages(tmp_path):
    at = open_app()
    upload(at, "colours.zip", zip_bytes(tmp_path, colour_entries()))
    dataset_id = at.session_state["dataset"]
    at.query_params.clear()  # the navigation menu drops the address's parameters
    at.switch_page("pages/runs.py").run()
    assert_clean(at)
    assert at.query_params["dataset"] == dataset_id


def test_rename_the_shown_dataset(tmp_path):
    saved = datasets.save_zip(make_zip(tmp_path / "colours.zip", colour_entries()))
    at = open_app("pages/dataset.py", query={"dataset": saved.id})
    at.text_input(key=f"dataset_new_name_{saved.id}").set_value("Colour swatches")
    button(at, "Save the name").click().run()
    assert_clean(at)
    assert "Renamed the dataset colours.zip to Colour swatches." in texts(at.success)
    assert "Colour swatches" in texts(at.subheader)
    assert list(saved_table(at)["name"]) == ["Colour swatches"]
    assert records.get(saved.id).name == "Colour swatches"


def test_delete_names_the_dataset_and_removes_it(tmp_path):
    saved = datasets.save_zip(make_zip(tmp_path / "colours.zip", colour_entries()))
    at = open_app("pages/dataset.py", query={"dataset": saved.id})
    assert any("Delete the dataset **colours.zip** (30 images," in m for m in texts(at.markdown))
    assert not at.warning
    button(at, "Delete").click().run()
    assert_clean(at)
    assert "Deleted the dataset colours.zip." in texts(at.success)
    assert records.list_datasets() == []
    assert "dataset" not in at.query_params and "dataset" not in at.session_state
    assert "No dataset yet" in at.info[0].value


def test_delete_of_a_dataset_that_runs_used_says_what_they_lose(tmp_path):
    saved = datasets.save_zip(make_zip(tmp_path / "colours.zip", colour_entries()))
    for n in range(2):
        run = runs_dir() / f"20240101-00000{n}-colours-abcd"
        run.mkdir(parents=True)
        (run / "model.keras").write_bytes(b"")
        write_json(run / MARKER, {"format": RUN_FORMAT, "status": "completed", "dataset_id": saved.id})
    at = open_app("pages/dataset.py", query={"dataset": saved.id})
    assert texts(at.warning) == [
        "2 saved runs were trained on the dataset colours.zip: they keep working for Classify, but evaluating them "
        "on this dataset, the learning-rate finder and training again would need the zip uploaded again."
    ]
    assert not [b for b in at.button if b.label == "Delete"]
    button(at, "Delete anyway").click().run()
    assert_clean(at)
    assert "Deleted the dataset colours.zip." in texts(at.success)
    assert not records.exists(saved.id)


def test_only_the_owner_or_an_admin_sees_rename_and_delete(tmp_path, monkeypatch):
    theirs = datasets.save_zip(make_zip(tmp_path / "colours.zip", colour_entries()), owner="b@x.org")
    at = signed_in("a@x.org", {"dataset": theirs.id})
    labels = [b.label for b in at.button]
    assert "Delete" not in labels and "Save the name" not in labels
    assert "Only b@x.org or an admin may rename or delete this dataset." in texts(at.caption)
    assert saved_table(at)["by"][0] == "b@x.org"

    owner = signed_in("b@x.org", {"dataset": theirs.id})
    assert "Delete" in [b.label for b in owner.button]
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@x.org")
    admin = signed_in("boss@x.org", {"dataset": theirs.id})
    button(admin, "Delete").click().run()
    assert_clean(admin)
    assert not records.exists(theirs.id)


def test_an_upload_while_signed_in_is_the_users(tmp_path):
    at = signed_in("a@x.org")
    upload(at, "colours.zip", zip_bytes(tmp_path, colour_entries()))
    assert records.get(at.session_state["dataset"]).added_by == key("a@x.org")
    assert saved_table(at)["by"][0] == "a@x.org"


def test_skipped_files_are_listed(tmp_path):
    at = open_app()
    entries = {**colour_entries(per_class=4), "red/broken.jpg": b"not a jpeg at all"}
    upload(at, "c.zip", zip_bytes(tmp_path, entries))
    assert_clean(at)
    assert metrics(at)["Skipped files"] == "1"
    assert [e.label for e in at.expander] == ["Skipped files (1)"]
    assert "broken.jpg" in at.dataframe[2].value.to_string()


def test_many_skipped_files_are_listed_a_page_at_a_time_and_examples_stay_a_few_per_class(tmp_path, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 2)
    at = open_app()
    broken = {f"red/broken{i}.jpg": b"not a jpeg at all" for i in range(3)}
    upload(at, "c.zip", zip_bytes(tmp_path, {**colour_entries(per_class=8), **broken}))
    assert_clean(at)
    assert "Skipped files (3)" in [e.label for e in at.expander]
    (skipped,) = [d.value for d in at.dataframe if "reason" in d.value.columns]
    assert list(skipped["file"]) == ["red/broken0.jpg", "red/broken1.jpg"]
    assert "Rows 1–2 of 3 (page 1 of 2)" in texts(at.caption)
    at.button(key=f"page_next_skipped_files_page_{at.session_state['dataset']}").click().run()
    assert_clean(at)
    (skipped,) = [d.value for d in at.dataframe if "reason" in d.value.columns]
    assert list(skipped["file"]) == ["red/broken2.jpg"]
    assert "Rows 3–3 of 3 (page 2 of 2)" in texts(at.caption)
    # The examples: 6 of each class's 8 images, with the class's count.
    assert [m for m in texts(at.markdown) if " · 8 images" in m] == [f"**{c}** · 8 images" for c in sorted(CLASSES)]
    assert [img.captions[0] for img in at.image] == [f"{i}.jpg" for _ in CLASSES for i in range(6)]


def test_the_saved_datasets_are_listed_a_page_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 2)
    for n in (4, 5, 6):
        datasets.save_zip(make_zip(tmp_path / f"colours{n}.zip", colour_entries(per_class=n)))
    at = open_app()
    first = list(saved_table(at)["name"])
    assert len(first) == 2
    assert "Datasets 1–2 of 3 (page 1 of 2)" in texts(at.caption)
    at.button(key="page_next_saved_datasets_page").click().run()
    assert_clean(at)
    assert "Datasets 3–3 of 3 (page 2 of 2)" in texts(at.caption)
    assert sorted(first + list(saved_table(at)["name"])) == ["colours4.zip", "colours5.zip", "colours6.zip"]


def test_hostile_zip_shows_an_error_and_keeps_the_good_dataset(tmp_path, work_dir):
    at = open_app()
    upload(at, "good.zip", zip_bytes(tmp_path, colour_entries(), "good.zip"))
    good = at.session_state["dataset"]
    evil = {"red/0.jpg": jpeg_bytes(COLORS["red"]), "../evil.txt": b"gotcha"}
    upload(at, "evil.zip", zip_bytes(tmp_path, evil, "evil.zip"))
    assert_clean(at)  # an error message, not a traceback
    assert len(at.error) == 1
    assert "outside its folder" in at.error[0].value and "../evil.txt" in at.error[0].value
    # A failed upload loses nothing: the dataset loaded before stays, and the message says so.
    assert "The dataset loaded before, **good.zip**, is still in use." in at.error[0].value
    assert at.session_state["dataset"] == good and at.query_params["dataset"] == good
    assert "good.zip" in texts(at.subheader)
    assert [s.name for s in records.list_datasets()] == ["good.zip"]
    assert not list(tmp_path.rglob("evil.txt")) and not list(work_dir.rglob("evil.txt"))
    assert not (work_dir.parent / "evil.txt").exists()


def test_a_broken_first_upload_says_so_and_shows_no_dataset(tmp_path):
    at = open_app()
    upload(at, "notes.zip", b"not a zip at all")
    assert_clean(at)
    assert len(at.error) == 1 and "still in use" not in at.error[0].value
    assert "No dataset yet" in at.info[0].value
    assert records.list_datasets() == []


def test_class_counts_are_shown_as_numbers(tmp_path):
    at = open_app()
    entries = {**class_entries(classes=("red", "blue"), per_class=3), **class_entries(classes=("green",), per_class=5)}
    upload(at, "c.zip", zip_bytes(tmp_path, entries))
    assert_clean(at)
    counts = at.dataframe[1].value
    assert counts.to_dict()["images"] == {"blue": 3, "green": 5, "red": 3}
    assert "**green** · 5 images" in texts(at.markdown)


def test_a_zip_with_its_own_split_says_where_validation_images_come_from(tmp_path):
    at = open_app()
    entries = {**class_entries("train/", per_class=4), **class_entries("val/", per_class=2)}
    upload(at, "s.zip", zip_bytes(tmp_path, entries))
    assert_clean(at)
    assert metrics(at)["Validation images"] == "from its val/ folder"
    counts = at.dataframe[1].value
    assert counts.to_dict()["val"] == {"blue": 2, "red": 2} and counts.to_dict()["total"] == {"blue": 6, "red": 6}


def test_an_upload_that_needs_room_says_what_it_would_remove_before_removing_it(tmp_path, monkeypatch):
    old = datasets.save_zip(make_zip(tmp_path / "old.zip", colour_entries(per_class=3)), name="old.zip")
    monkeypatch.setenv("CLASSIFIER_DATASETS_MB", str(old.bytes * 1.6 / 1024**2))
    at = open_app()
    upload(at, "new.zip", zip_bytes(tmp_path, colour_entries(per_class=4), "new.zip"))
    assert_clean(at)
    [warning] = texts(at.warning)
    assert "saving **new.zip**" in warning and "would remove the least recently used dataset" in warning
    assert "**old.zip**" in warning and "saved by a guest" in warning
    assert records.exists(old.id) and len(records.list_datasets()) == 1  # nothing saved, nothing removed yet

    button(at, "Cancel").click().run()
    assert_clean(at)
    assert not at.warning and records.exists(old.id) and len(records.list_datasets()) == 1

    upload(at, "new2.zip", zip_bytes(tmp_path, colour_entries(per_class=4), "new2.zip"))
    button(at, "Save it and remove them").click().run()
    assert_clean(at)
    assert not records.exists(old.id)
    assert [s.name for s in records.list_datasets()] == ["new2.zip"]
    assert any("the least recently used were removed: old.zip." in m for m in texts(at.info))


def test_an_upload_over_the_quota_is_refused_in_words_and_keeps_what_was_open(tmp_path, monkeypatch):
    at = open_app()
    upload(at, "first.zip", zip_bytes(tmp_path, colour_entries(per_class=3), "first.zip"))
    first = at.session_state["dataset"]
    monkeypatch.setenv("CLASSIFIER_QUOTA_MB", str(records.get(first).bytes * 1.2 / 1024**2))
    upload(at, "second.zip", zip_bytes(tmp_path, colour_entries(per_class=4), "second.zip"))
    assert_clean(at)
    [error] = texts(at.error)
    assert "CLASSIFIER" in error and "each person may keep" in error and "is still in use" in error
    assert at.session_state["dataset"] == first and len(records.list_datasets()) == 1
