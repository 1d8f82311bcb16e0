"""The Classify page through AppTest: the saved runs, ranking uploaded images."""

from __future__ import annotations

from conftest import COLORS, jpeg_bytes
from pagetest import CLASSES, assert_clean, copy_run, open_app, texts


def test_classify_without_runs_says_so():
    at = open_app("pages/classify.py")
    assert "No saved model yet" in at.info[0].value
    assert not at.file_uploader


def test_classify_lists_the_run_and_ranks_uploaded_images(trained_run):
    run = copy_run(trained_run)
    at = open_app("pages/classify.py")
    model = at.selectbox[0]
    assert len(model.options) == 1 and model.options[0].startswith(f"{run.name} · ")
    assert model.value.id == run.name
    assert f"This model knows: {', '.join(sorted(CLASSES))}." in at.info[0].value

    images = [
        ("red.jpg", jpeg_bytes(COLORS["red"], seed=7), "image/jpeg"),
        ("notes.txt", b"this is not an image", "text/plain"),
    ]
    at.file_uploader[0].set_value(images).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["file"]) == ["red.jpg", "notes.txt"]
    assert table["top class"][0] in CLASSES and table["answer"][0] == table["top class"][0]  # no threshold: sure
    assert 1 / 3 <= table["probability"][0] <= 1  # the top class of three has at least a third
    assert table["note"][0] == "" and table["note"][1]
    assert [d.label for d in at.get("download_button")] == ["Download as CSV"]
    ranked = [m for m in texts(at.markdown) if m.startswith(f"**{table['top class'][0]}** · ")]
    assert ranked and ranked[0].endswith("%")
    assert len(at.error) == 1 and "notes.txt" in at.error[0].value


def test_classify_selects_the_run_named_in_the_address(trained_run):
    older = copy_run(trained_run, "20190101-000000-older-0001", finished="2019-01-01T00:00:00")
    copy_run(trained_run)
    at = open_app("pages/classify.py", query={"run": older.name})
    assert at.selectbox[0].value.id == older.name
    at = open_app("pages/classify.py")
    assert at.selectbox[0].value.id == trained_run.name  # newest first by default


def test_a_deleted_or_unknown_run_in_the_address_says_so_instead_of_switching(trained_run):
    kept = copy_run(trained_run)
    at = open_app("pages/classify.py", query={"run": "20200101-000000-gone-ffff"})
    assert_clean(at)
    assert "There is no saved run **20200101-000000-gone-ffff**" in at.error[0].value
    assert at.selectbox[0].value.id == kept.name
    at = open_app("pages/classify.py", query={"run": "../../etc"})
    assert "There is no saved run" in at.error[0].value


def test_below_the_run_s_threshold_the_answer_is_not_sure_with_the_best_guesses(trained_run):
    from core.model import calibration

    run = copy_run(trained_run)
    calibration.set_threshold(run, 0.999, coverage=0.4, accuracy=0.96)
    at = open_app("pages/classify.py")
    assert any("answers “not sure” below 100% confidence" in c for c in texts(at.caption))
    photo = jpeg_bytes(COLORS["red"], seed=7)
    at.file_uploader[0].set_value([("red.jpg", photo, "image/jpeg"), ("blue.jpg", photo, "image/jpeg")]).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["answer"]) == ["not sure", "not sure"]
    assert table["top class"][0] in CLASSES and "Below this model's 100% threshold" in table["note"][0]
    assert any(m.startswith("**Not sure** · best guess ") for m in texts(at.markdown))
    assert len(at.get("vega_lite_chart")) == 2  # the top guesses are still drawn, one chart per image

    calibration.set_threshold(run, None)  # "always answer", as saved on the Evaluate page
    at = open_app("pages/classify.py")
    at.file_uploader[0].set_value([("red.jpg", photo, "image/jpeg")]).run()
    assert not any(m.startswith("**Not sure**") for m in texts(at.markdown))


def test_more_images_than_the_page_takes_are_cut_to_the_first_ones_and_it_says_so(trained_run):
    limit = 50  # pages/classify.py's MAX_FILES
    copy_run(trained_run)
    at = open_app("pages/classify.py")
    photo = jpeg_bytes(COLORS["red"], seed=7)
    at.file_uploader[0].set_value([(f"p{i}.jpg", photo, "image/jpeg") for i in range(limit + 3)]).run()
    assert_clean(at)
    assert len(at.dataframe[0].value) == limit
    assert any(
        f"You dropped {limit + 3} images: this page classifies the first {limit}" in w for w in texts(at.warning)
    )
