"""End to end in a real browser: `streamlit run app.py` and Debian's Chromium driven by Playwright.

Upload a hostile zip (refused with a sentence), upload a real one, train VGG16 from random weights at 32 px for one
epoch, follow the link to Classify, upload an image, read the ranked result and see where the model looked
(Grad-CAM); evaluate the run and see its confusion matrix and per-class table; start a long run and stop it
("Stopping…" within a second); delete that run on Runs (the popover closes); then download the first run.
Waits are on Streamlit's script state and on visible text, never on sleeps.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from browser import (
    MARKS,
    TRAIN_WAIT,
    WAIT,
    AppServer,
    assert_no_traceback,
    chromium,
    evidence_on_failure,
    new_page,
    settle,
)
from conftest import COLORS, class_entries, jpeg_bytes, make_zip

CLASSES = ("red", "green", "blue")
pytestmark = MARKS


@pytest.fixture
def server(tmp_path):
    app = AppServer(tmp_path).start()
    try:
        yield {"url": app.url, "runs": app.runs, "work": app.work, "log": app.log, "app": app}
    finally:
        app.stop()


@pytest.fixture
def page(server):
    with chromium() as browser:
        yield new_page(browser)


def test_upload_train_classify_download(server, page, tmp_path):
    with evidence_on_failure(page, server["app"], tmp_path):
        journey(page, server, tmp_path)


def journey(page, server, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    evil = make_zip(tmp_path / "evil.zip", {"red/0.jpg": jpeg_bytes(COLORS["red"]), "../evil.txt": b"gotcha"})
    good = make_zip(tmp_path / "colours.zip", class_entries(classes=CLASSES, per_class=10))
    probe = tmp_path / "probe.jpg"
    probe.write_bytes(jpeg_bytes(COLORS["green"], seed=4242))

    # ---- Dataset: a hostile zip is refused with a sentence, then a good one is read.
    page.goto(server["url"])
    expect(page.get_by_role("heading", name="Dataset")).to_be_visible()
    settle(page)
    page.locator("input[type=file]").set_input_files(evil)
    expect(page.get_by_text("points outside its folder")).to_be_visible()
    settle(page)
    assert_no_traceback(page)
    assert not list(tmp_path.rglob("evil.txt"))

    page.locator("input[type=file]").set_input_files(good)
    expect(page.get_by_role("heading", name="colours.zip")).to_be_visible()
    settle(page)
    expect(page.get_by_text("points outside its folder")).to_have_count(0)
    classes_metric = page.get_by_test_id("stMetric").filter(has=page.get_by_text("Classes", exact=True))
    expect(classes_metric).to_contain_text("3")
    for cls in CLASSES:
        expect(page.locator("strong", has_text=re.compile(f"^{cls}$"))).to_be_visible()

    # ---- Train: random weights, the smallest image size, one epoch.
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Train").click()
    start = page.get_by_role("button", name="Start training")
    expect(start).to_be_visible()
    settle(page)
    page.get_by_test_id("stRadio").filter(has_text="Weights").get_by_text("Random (no download)").click()
    expect(page.get_by_role("radio", name="Random (no download)")).to_be_checked()
    settle(page)
    size = page.get_by_test_id("stSlider").filter(has_text="Image size (px)")
    size.locator("input[type=range]").focus()
    size.locator("input[type=range]").press("Home")
    expect(size.get_by_test_id("stSliderThumbValue")).to_have_text("32")
    settle(page)
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("1")
    epochs.press("Enter")
    expect(epochs).to_have_value("1")
    settle(page)
    start.click()
    expect(page.get_by_text("the model is saved")).to_be_visible(timeout=TRAIN_WAIT)
    settle(page)
    assert_no_traceback(page)
    job_id = re.search(r"[?&]job=([^&]+)", page.url).group(1)
    config = json.loads((server["runs"] / job_id / "config.json").read_text())
    assert (config["weights"], config["image_size"], config["epochs"]) == ("none", 32, 1)
    expect(page.get_by_test_id("stMetric").filter(has_text="Epochs")).to_contain_text("1")

    # ---- Classify: the link opens this run; one image gets a ranked answer.
    page.get_by_role("link", name="Classify images with this model").click()
    expect(page.get_by_text("Images to classify")).to_be_visible()
    settle(page)
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(f"^{re.escape(job_id)} · "))
    page.locator("input[type=file]").set_input_files(probe)
    expect(page.get_by_text(re.compile(r"^(red|green|blue) · \d+\.\d%$"))).to_be_visible()
    settle(page)
    assert_no_traceback(page)

    # ---- Grad-CAM: the heat map of the top class appears beside the photo, from block3_conv3 (random weights).
    top = page.get_by_text(re.compile(r"^(red|green|blue) · \d+\.\d%$")).inner_text().split(" · ")[0]
    expect(page.get_by_test_id("stImage")).to_have_count(1)
    page.get_by_text("Show where the model looked (Grad-CAM)").click()
    caption = page.get_by_text(f"Grad-CAM of {top} · block3_conv3", exact=False)
    expect(caption).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stImage")).to_have_count(2)
    overlay = page.get_by_test_id("stImage").nth(1).locator("img")
    expect(overlay).to_be_visible()
    assert overlay.evaluate("img => img.complete && img.naturalWidth") == 32  # the model's own 32 px view
    assert_no_traceback(page)

    # ---- Evaluate: this session's run is chosen; one click scores its held-out images, saved with the run.
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Evaluate").click()
    evaluate = page.get_by_role("button", name="Evaluate this run")
    expect(evaluate).to_be_visible()
    settle(page)
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(f"^{re.escape(job_id)} · "))
    evaluate.click()
    expect(page.get_by_role("heading", name="Confusion matrix")).to_be_visible(timeout=TRAIN_WAIT)
    settle(page)
    assert_no_traceback(page)
    assert (server["runs"] / job_id / "evaluation.json").is_file()
    expect(page.get_by_test_id("stMetric").filter(has_text="Images")).to_contain_text("3")  # 10% of 3 x 10
    chart = page.get_by_test_id("stVegaLiteChart").first  # the confusion matrix, first of the page's charts
    expect(chart.locator("canvas, svg").first).to_be_visible()
    assert chart.locator("canvas, svg").first.bounding_box()["height"] > 100
    headings = page.locator("h3").all_inner_texts()
    assert headings.index("Confusion matrix") < headings.index("Per-class scores")
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible()
    expect(table).to_contain_text("precision")
    expect(page.get_by_role("button", name="Download per-class scores (CSV)")).to_be_visible()
    expect(page.get_by_text("This run has not been evaluated yet")).to_have_count(0)  # the saved view

    # ---- "Not sure": a threshold moved to 100 % and saved on Evaluate makes Classify answer "not sure".
    expect(page.get_by_role("heading", name="Can the probabilities be trusted?")).to_be_visible()
    page.get_by_text("Always answer").click()
    threshold = page.get_by_test_id("stSlider").filter(has_text="Answer only at this confidence or more")
    expect(threshold).to_be_visible()
    settle(page)
    threshold.locator("input[type=range]").focus()
    threshold.locator("input[type=range]").press("End")
    expect(threshold.get_by_test_id("stSliderThumbValue")).to_have_text("1.00")
    settle(page)
    page.get_by_role("button", name="Save threshold").click()
    expect(page.get_by_text("Saved by a user: 100%")).to_be_visible()
    settle(page)
    assert json.loads((server["runs"] / job_id / "calibration.json").read_text())["threshold"] == 1.0
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Classify").click()
    expect(page.get_by_text("Images to classify")).to_be_visible()
    settle(page)
    page.locator("input[type=file]").set_input_files(probe)
    expect(page.get_by_text(re.compile(r"^Not sure · best guess (red|green|blue) at \d+\.\d%$"))).to_be_visible()
    settle(page)
    assert_no_traceback(page)

    # ---- Stop: a long training says "Stopping…" within a second of the click, and keeps its model.
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Train").click()
    page.get_by_role("button", name="Train another model").click()
    expect(start).to_be_visible()
    settle(page)
    epochs.fill("500")
    epochs.press("Enter")
    expect(epochs).to_have_value("500")
    settle(page)
    start.click()
    expect(page.get_by_text(re.compile(r"^Epoch \d+/500 · batch"))).to_be_visible(timeout=TRAIN_WAIT)
    stopped_id = re.search(r"[?&]job=([^&]+)", page.url).group(1)
    page.get_by_role("button", name="Stop").click()
    # At once: the click's own rerun draws it (a callback records the stop first), before the run has ended. How
    # long that rerun takes depends on what else loads the machine (the suite keeps 2 cores busy), so it is not
    # timed here; the run then still has to end its batch and save, which the next line waits for.
    expect(page.get_by_text("Stopping…").first).to_be_visible()
    expect(page.get_by_text("the model trained so far is saved")).to_have_count(0)
    expect(page.get_by_text("the model trained so far is saved")).to_be_visible(timeout=TRAIN_WAIT)
    settle(page)
    assert_no_traceback(page)

    # ---- Runs: deleting the stopped run confirms it and closes the popover (no second run is aimed at).
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Runs").click()
    expect(page.get_by_role("combobox", name="Run", exact=True)).to_have_value(
        re.compile(f"^{re.escape(stopped_id)} · ")
    )
    settle(page)
    page.get_by_role("button", name="Delete run").click()
    confirm = page.get_by_role("button", name="Yes, delete it")
    expect(confirm).to_be_visible()
    confirm.click()
    expect(page.get_by_text(f"Deleted run {stopped_id}.")).to_be_visible()
    settle(page)
    expect(page.get_by_role("button", name="Yes, delete it")).to_be_hidden()
    assert not (server["runs"] / stopped_id).exists() and (server["runs"] / job_id).is_dir()
    expect(page.get_by_role("combobox", name="Run", exact=True)).to_have_value(re.compile(f"^{re.escape(job_id)} · "))

    # ---- Runs: the run is listed and downloads as a zip holding the model.
    download = page.get_by_role("button", name="Download run (.zip)")
    expect(download).to_be_visible()
    settle(page)
    with page.expect_download(timeout=WAIT) as info:
        download.click()
    saved = tmp_path / "run.zip"
    info.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        assert f"{job_id}/model.keras" in zf.namelist()
    settle(page)
    assert_no_traceback(page)


def test_a_link_opened_first_after_a_server_start_gets_the_app_menu(server, page, tmp_path):
    """Streamlit reads a folder named pages/ as the page list until the app's own navigation first runs: the
    first visitor after a start, arriving by a shared link, must still get the app's menu and that page."""
    from playwright.sync_api import expect

    with evidence_on_failure(page, server["app"], tmp_path):
        page.goto(f"{server['url']}/runs")
        expect(page.get_by_role("heading", name="Runs")).to_be_visible()
        settle(page)
        nav = page.get_by_test_id("stSidebarNav")
        names = ["Dataset", "Train", "Evaluate", "Classify", "Review", "Runs", "Jobs"]  # after each link's icon name
        expect(nav.get_by_role("link")).to_have_text([re.compile(f"{name}$") for name in names])
        assert_no_traceback(page)
