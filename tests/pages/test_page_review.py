"""The Review page through AppTest: the queue of a real saved dataset labelled with its keys (the buttons the
keyboard shortcuts press), undo, a new class, the commit that makes a version; the suspects of a run judged there;
images added to a class on the Dataset page; and Classify's opt-in "Keep these images for review"."""

from __future__ import annotations

from conftest import COLORS, encoded, jpeg_bytes, photo, tiny_config
from pagetest import assert_clean, copy_run, load, open_app, texts

from core.workspace import decisions, review, versions


def image(seed: int) -> bytes:
    return encoded(photo(seed, (96, 72)), "JPEG", quality=90)


def queued(ds, n: int = 3) -> list:
    tops = [[("red", 0.9), ("blue", 0.1)], [("green", 0.5), ("red", 0.45)], [("blue", 0.6), ("green", 0.3)]]
    return [review.enqueue(ds.id, image(i), f"photo {i}.jpg", top=tops[i % 3], source="api", key_id="k1")
            for i in range(n)]  # fmt: skip


def open_review(ds):
    return open_app("pages/review.py", query={"dataset": ds.id})


def progress_text(at) -> str:
    return at.get("progress")[0].proto.text


def test_without_a_dataset_the_page_sends_to_the_dataset_page():
    at = open_app("pages/review.py")
    assert texts(at.title) == ["Review"]
    assert "Choose a dataset on the Dataset page first" in at.info[0].value


def test_the_queue_is_labelled_with_its_keys_undone_and_committed(tmp_path):
    ds = load(tmp_path)
    sure, close, middle = queued(ds)
    at = open_review(ds)
    assert progress_text(at) == "0 of 3 reviewed"
    # The most informative first: the smallest margin between the two best classes.
    assert "1. **green** · 50%\n2. **red** · 45%" in texts(at.markdown)
    keys = {b.key: b for b in at.button}
    assert [keys[f"review_class_{i}"].label for i in range(3)] == ds.classes
    assert keys["review_class_0"].proto.shortcut == "1" and keys["review_discard"].proto.shortcut == "x"
    assert keys["review_undo"].proto.shortcut == "left" and keys["review_new"].proto.shortcut == "n"

    at.button(key="review_class_0").click().run()  # "1": the first class
    assert_clean(at)
    assert review.item(close.id).label == ds.classes[0] and progress_text(at) == "1 of 3 reviewed"
    assert "1. **blue** · 60%\n2. **green** · 30%" in texts(at.markdown)  # the next one
    at.button(key="review_undo").click().run()  # "←"
    assert review.item(close.id).state == "queued" and progress_text(at) == "0 of 3 reviewed"
    at.button(key="review_class_1").click().run()
    at.button(key="review_discard").click().run()  # the next: middle
    assert review.item(middle.id).state == "discarded"
    at.button(key="review_new").click().run()  # "N": a field for the new class's name
    at.text_input(key="review_new_name").set_value("purple")
    at.button(key="FormSubmitter:review_new_form-Label it with this class").click().run()
    assert_clean(at)
    assert review.item(sure.id).label == "purple"
    assert "Nothing waits for a label" in at.info[0].value and progress_text(at) == "3 of 3 reviewed"

    commit = at.button(key="review_commit")
    assert commit.label == "Add the 2 labelled images as a new version" and not commit.disabled
    at.text_input(key="review_message").set_value("two reviewed photos").run()
    at.button(key="review_commit").click().run()
    assert_clean(at)
    assert "Made version 2 of the dataset: two reviewed photos" in texts(at.success)
    assert any("version 2" in c for c in texts(at.caption))
    v = versions.newest(ds.id)
    assert v.number == 2 and {e.hash: e.label for e in v.entries}[close.hash] == ds.classes[1]
    assert at.button(key="review_commit").disabled  # nothing waits any more


def make_run_with_suspects(ds) -> str:
    from core.evaluate.label_issues import FILE, LabelIssues
    from core.workspace import runs

    run_id = "20240101-000000-colours-abcd"
    path = runs.runs_dir() / run_id
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"")
    runs.write_json(path / "classes.json", ds.classes)
    runs.write_json(path / "config.json", tiny_config().to_dict())
    runs.write_json(path / "metrics.json", {"val_accuracy": 1.0})
    runs.write_json(path / runs.MARKER, {"format": runs.RUN_FORMAT, "version": runs.RUN_VERSION,
                                         "status": "completed", "finished": "2024-01-01T00:00:00",
                                         "dataset": "colours.zip", "dataset_id": ds.id, "owner": ""})  # fmt: skip
    suspects = [{"file": "red/0.jpg", "given": "red", "suggested": "blue", "confidence": 0.91},
                {"file": "green/1.jpg", "given": "green", "suggested": "red", "confidence": 0.72}]  # fmt: skip
    found = LabelIssues(run=run_id, classes=ds.classes, images=len(ds.items), folds=5, features="gap",
                        fine_tuned=False, out_of_fold_accuracy=0.9, suspects=suspects, dataset_id=ds.id,
                        dataset=ds.title, root=str(ds.root))  # fmt: skip
    runs.write_json(path / FILE, found.to_dict())
    return run_id


def test_suspects_are_judged_on_the_same_page_and_relabelled_by_the_commit(tmp_path):
    ds = load(tmp_path)
    make_run_with_suspects(ds)
    at = open_review(ds)
    at.segmented_control(key="review_mode").set_value("suspects").run()
    assert_clean(at)
    assert progress_text(at) == "0 of 2 suspects decided"
    assert "Given **red** · suggested **blue** 91%" in texts(at.markdown)
    assert at.button(key="suspect_take").proto.shortcut == "s" and at.button(key="suspect_keep").label == "Keep red"
    at.button(key="suspect_take").click().run()  # "S": blue, at the next commit
    assert "Given **green** · suggested **red** 72%" in texts(at.markdown)
    at.button(key="suspect_exclude").click().run()  # "X": excluded from training at once
    assert decisions.excluded(ds.id) == ["green/1.jpg"]
    assert "Every suspect is decided." in texts(at.success)
    assert any("1 suspect to relabel wait" in c for c in texts(at.caption))
    at.button(key="review_commit").click().run()
    assert_clean(at)
    red0 = next(it for it in ds.items if it.path == "red/0.jpg")
    assert {e.hash: e.label for e in versions.newest(ds.id).entries}[red0.digest] == "blue"
    assert versions.newest(ds.id).number == 2


def test_the_labelled_images_waiting_for_the_version_are_listed_a_page_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 2)
    ds = load(tmp_path)
    for it in queued(ds):
        review.decide(it.id, "red", "")
    names = [it.name for it in review.queue(ds.id, review.LABELLED)]  # the table's order
    at = open_review(ds)
    assert [e.label for e in at.expander] == ["Labelled, waiting for the next version (3)"]
    table = at.dataframe[0].value
    assert list(table["image"]) == names[:2] and list(table["class"]) == ["red", "red"]
    assert "Rows 1–2 of 3 (page 1 of 2)" in texts(at.caption)
    at.button(key=f"page_next_review_labelled_page_{ds.id}").click().run()
    assert_clean(at)
    assert list(at.dataframe[0].value["image"]) == names[2:]
    assert "Rows 3–3 of 3 (page 2 of 2)" in texts(at.caption)


def test_the_decided_suspects_are_listed_a_page_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 1)
    ds = load(tmp_path)
    make_run_with_suspects(ds)
    at = open_review(ds)
    at.segmented_control(key="review_mode").set_value("suspects").run()
    at.button(key="suspect_keep").click().run()  # red/0.jpg
    at.button(key="suspect_exclude").click().run()  # green/1.jpg
    assert_clean(at)
    assert "Decided (2)" in [e.label for e in at.expander]
    table = at.dataframe[0].value
    assert list(zip(table["image"], table["decision"], strict=True)) == [("red/0.jpg", "keep")]
    assert "Rows 1–1 of 2 (page 1 of 2)" in texts(at.caption)
    at.button(key=f"page_next_review_decided_page_{ds.id}").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(zip(table["image"], table["decision"], strict=True)) == [("green/1.jpg", "exclude from training")]
    assert "Rows 2–2 of 2 (page 2 of 2)" in texts(at.caption)


def test_images_added_to_a_class_on_the_dataset_page_wait_labelled_on_review(tmp_path):
    ds = load(tmp_path)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    assert "Add images to a class" in texts(at.subheader)
    at.file_uploader(key="review_add_files_0").set_value(
        [("a.jpg", image(1), "image/jpeg"), ("b.png", encoded(photo(2, (64, 48))), "image/png")]
    ).run()
    at.selectbox(key="review_add_class").set_value("New class…").run()
    at.text_input(key="review_add_new_class").set_value("purple").run()
    at.button(key="review_add_button").click().run()
    assert_clean(at)
    assert any("2 images of purple wait on the Review page" in s for s in texts(at.success))
    labelled = review.queue(ds.id, review.LABELLED)
    assert sorted((it.name, it.label, it.source) for it in labelled) == [("a.jpg", "purple", "upload"),
                                                                         ("b.png", "purple", "upload")]  # fmt: skip
    review.enqueue(ds.id, image(3), "c.jpg", source="api")  # one to label: the keys show
    at = open_review(ds)
    assert at.button(key="review_commit").label == "Add the 2 labelled images as a new version"
    assert [b.label for b in at.button if b.key.startswith("review_class_")][-1] == "purple"  # a key of its own


def test_classify_keeps_the_images_for_review_only_when_asked(trained_run, tmp_path):
    from core.workspace import runs

    ds = load(tmp_path)
    run = copy_run(trained_run)
    runs.write_json(run / runs.MARKER, {**runs.read_json(run / runs.MARKER), "dataset_id": ds.id})
    at = open_app("pages/classify.py")
    keep = at.checkbox(key="keep_for_review_classify")
    assert keep.label == "Keep these images for review" and keep.value is False and not keep.disabled
    red = ("red.jpg", jpeg_bytes(COLORS["red"], seed=7), "image/jpeg")
    at.file_uploader[0].set_value([red]).run()
    assert_clean(at)
    assert review.queue(ds.id, None) == []  # off by default: nothing kept
    at.checkbox(key="keep_for_review_classify").check().run()
    assert_clean(at)
    [kept] = review.queue(ds.id)
    assert (kept.name, kept.source, kept.run_id) == ("red.jpg", "classify", run.name) and len(kept.top) == 3
    assert "Kept 1 image in the review queue of this model's dataset." in texts(at.caption)


def test_the_demo_keeps_a_photo_for_review_only_when_the_visitor_asks(trained_run, tmp_path):
    from pagetest import APP, SCRIPT_TIMEOUT
    from streamlit.testing.v1 import AppTest

    from core.workspace import runs, share

    ds = load(tmp_path)
    run = copy_run(trained_run)
    runs.write_json(run / runs.MARKER, {**runs.read_json(run / runs.MARKER), "dataset_id": ds.id})
    at = AppTest.from_file(APP, default_timeout=SCRIPT_TIMEOUT)
    at.query_params.update({"demo": run.name, "key": share.share(run)})
    at.run()
    keep = at.checkbox(key="keep_for_review_demo")
    assert keep.label == "Keep this photo so that the model's owner can review it" and keep.value is False
    keep.check()
    at.file_uploader[0].set_value(("card.png", encoded(photo(5, (64, 48))), "image/png")).run()
    assert_clean(at)
    [kept] = review.queue(ds.id)
    assert (kept.name, kept.source, kept.run_id, kept.added_by) == ("card.png", "demo", run.name, "")
