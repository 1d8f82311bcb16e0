"""The shared workspace in a real browser: what one tab made is found again after a reload, from another browser
with no link, after a server restart, and signed-in users may change only what is theirs.

Waits are on Streamlit's script state and on visible text, never on sleeps.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from browser import (
    MARKS,
    TRAIN_WAIT,
    AppServer,
    assert_no_traceback,
    chromium,
    evidence_on_failure,
    new_page,
    settle,
)
from conftest import class_entries, make_zip

pytestmark = MARKS
CLASSES = ("red", "green", "blue")


def nav(page, name: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()


def upload(page, app: AppServer, zip_path: Path) -> str:
    """Upload a zip on the Dataset page; returns the dataset id the address now carries."""
    from playwright.sync_api import expect

    page.goto(app.url)
    settle(page)
    page.locator("input[type=file]").set_input_files(zip_path)
    expect(page.get_by_role("heading", name=zip_path.name)).to_be_visible()
    settle(page)
    match = re.search(r"[?&]dataset=([0-9a-f]+)", page.url)
    assert match, page.url
    return match.group(1)


def fill_form(page, epochs: int) -> None:
    """Random weights, 32 px, Adam, ``epochs`` epochs."""
    from playwright.sync_api import expect

    page.get_by_test_id("stRadio").filter(has_text="Weights").get_by_text("Random (no download)").click()
    expect(page.get_by_role("radio", name="Random (no download)")).to_be_checked()
    settle(page)
    size = page.get_by_test_id("stSlider").filter(has_text="Image size (px)")
    size.locator("input[type=range]").focus()
    size.locator("input[type=range]").press("Home")
    expect(size.get_by_test_id("stSliderThumbValue")).to_have_text("32")
    settle(page)
    box = page.get_by_role("spinbutton", name="Epochs")
    box.fill(str(epochs))
    box.press("Enter")
    expect(box).to_have_value(str(epochs))
    settle(page)


def start_training(page) -> str:
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"[?&]job="))
    settle(page)
    return re.search(r"[?&]job=([^&]+)", page.url).group(1)


def test_reload_new_browser_jobs_view_and_stop(tmp_path):
    from playwright.sync_api import expect

    app = AppServer(tmp_path).start()
    data = make_zip(tmp_path / "colours.zip", class_entries(classes=CLASSES, per_class=8))
    try:
        with chromium() as browser:
            page, other = new_page(browser), new_page(browser)
            with evidence_on_failure([page, other], app, tmp_path):
                dataset_id = upload(page, app, data)
                nav(page, "Train")
                expect(page.get_by_role("button", name="Start training")).to_be_visible()
                settle(page)
                assert f"dataset={dataset_id}" in page.url  # the menu dropped it; the page put it back
                fill_form(page, epochs=500)
                app.saved_form(dataset_id, "epochs", 500)  # saved as typed, before the page draws again

                # A reload: same dataset, same options.
                page.reload()
                expect(page.get_by_text("Dataset colours.zip")).to_be_visible()
                settle(page)
                expect(page.get_by_role("radio", name="Random (no download)")).to_be_checked()
                expect(page.get_by_role("spinbutton", name="Epochs")).to_have_value("500")
                size = page.get_by_test_id("stSlider").filter(has_text="Image size (px)")
                expect(size.get_by_test_id("stSliderThumbValue")).to_have_text("32")
                job_id = start_training(page)
                expect(page.get_by_text(re.compile(r"^Epoch \d+/500 · batch"))).to_be_visible(timeout=TRAIN_WAIT)

                # Another browser with no address: the sidebar says a job runs; the jobs view lists and opens it.
                other.goto(app.url)
                settle(other)
                other.get_by_role("link", name=re.compile("1 job running")).click()
                expect(other.get_by_role("heading", name="Jobs")).to_be_visible()
                card = other.locator(f".st-key-job_card_{job_id}")
                expect(card).to_contain_text("colours.zip")
                card.get_by_role("link", name="Watch").click()
                expect(other.get_by_text(re.compile(r"^Epoch \d+/500 · batch"))).to_be_visible()
                expect(other).to_have_url(re.compile(f"job={job_id}"))
                assert_no_traceback(other)

                # Meanwhile a visitor uploads a zip bomb: a sentence for them, the training goes on for the owner.
                before = epoch_shown(page)
                bomb = make_zip(tmp_path / "bomb.zip", {**class_entries(per_class=2), "red/zeros.jpg": bytes(60 << 20)})
                other.goto(app.url)
                settle(other)
                other.locator("input[type=file]").set_input_files(bomb)
                expect(other.get_by_text("it may be a zip bomb")).to_be_visible()
                assert_no_traceback(other)
                expect(page.get_by_text(re.compile(rf"^Epoch (?!{before}/)\d+/500 · batch"))).to_be_visible(
                    timeout=TRAIN_WAIT
                )
                assert not list((app.work / "datasets").glob("*/files/red/zeros.jpg"))

                # Stop from the jobs view: it names the job and asks once.
                nav(other, "Jobs")
                card = other.locator(f".st-key-job_card_{job_id}")
                card.get_by_role("button", name="Stop").click()
                confirm = other.get_by_role("button", name="Stop it")
                expect(confirm).to_be_visible()
                expect(other.get_by_text(f"Stop the training {job_id}")).to_be_visible()
                confirm.click()
                expect(card).to_contain_text("stopped, model saved", timeout=TRAIN_WAIT)
                expect(page.get_by_text("the model trained so far is saved")).to_be_visible(timeout=TRAIN_WAIT)
                assert (app.runs / job_id / "model.keras").is_file()
                assert_no_traceback(page)
                assert_no_traceback(other)
    finally:
        app.stop()


def epoch_shown(page) -> int:
    text = page.get_by_text(re.compile(r"^Epoch \d+/500 · batch")).inner_text()
    return int(re.match(r"Epoch (\d+)", text).group(1))


def test_jobs_outlive_a_server_restart_and_a_killed_worker_is_reported(tmp_path):
    from playwright.sync_api import expect

    app = AppServer(tmp_path, env={"CLASSIFIER_MAX_JOBS": "1"}).start()
    data = make_zip(tmp_path / "colours.zip", class_entries(classes=CLASSES, per_class=8))
    try:
        with chromium() as browser:
            page = new_page(browser)
            with evidence_on_failure(page, app, tmp_path):
                upload(page, app, data)
                nav(page, "Train")
                expect(page.get_by_role("button", name="Start training")).to_be_visible()
                settle(page)
                fill_form(page, epochs=500)
                first = start_training(page)
                expect(page.get_by_text(re.compile(r"^Epoch \d+/500 · batch"))).to_be_visible(timeout=TRAIN_WAIT)
                page.get_by_role("button", name="Set up another training").click()
                settle(page)
                fill_form(page, epochs=1)
                second = start_training(page)
                expect(page.get_by_text("1 job ahead of yours")).to_be_visible()

                app.restart()  # SIGTERM: the training's own process goes on

                page.goto(f"{app.url}/train?job={first}")
                expect(page.get_by_text(re.compile(r"^Epoch \d+/500 · batch"))).to_be_visible()
                before = epoch_shown(page)
                page.wait_for_function(  # the charts and the count go on after the restart
                    "n => [...document.querySelectorAll('p')].some(p => {"
                    " const m = p.innerText.match(/^Epoch (\\d+)\\/500/); return m && +m[1] > n; })",
                    arg=before,
                )
                assert len(app.job_pids()) == 1
                page.get_by_role("button", name="Stop").click()  # not this session's job: it asks once
                page.get_by_role("button", name="Stop it").click()
                expect(page.get_by_text("the model trained so far is saved")).to_be_visible(timeout=TRAIN_WAIT)
                page.goto(f"{app.url}/train?job={second}")
                expect(page.get_by_text("the model is saved")).to_be_visible(timeout=TRAIN_WAIT)
                settle(page)

                # A worker killed as the system kills on out-of-memory: the page says so; the server goes on.
                page.get_by_role("button", name="Train another model").click()
                settle(page)
                fill_form(page, epochs=500)
                doomed = start_training(page)
                expect(page.get_by_text(re.compile(r"^Epoch \d+/500 · batch"))).to_be_visible(timeout=TRAIN_WAIT)
                (pid,) = app.job_pids()
                os.kill(pid, signal.SIGKILL)
                expect(page.get_by_text("The training process ended unexpectedly: it was killed by SIGKILL")) \
                    .to_be_visible()  # fmt: skip
                assert not (app.runs / doomed).exists()
                expect(page.get_by_role("button", name="Try again")).to_be_visible()  # the restart of test_page_jobs

                nav(page, "Runs")
                table = page.get_by_test_id("stDataFrame").first
                expect(table).to_contain_text(second)
                expect(table).to_contain_text(first)
                expect(table).not_to_contain_text(doomed)
                assert_no_traceback(page)
    finally:
        app.stop()


def test_signed_in_users_change_only_what_is_theirs_and_admins_anything(tmp_path, trained_run, monkeypatch):
    from oidc import provider, sign_in, write_secrets
    from playwright.sync_api import expect

    from core.workspace import access
    from core.workspace.datasets import save_zip
    from core.workspace.runs import MARKER, delete_run, read_json, write_json

    app = AppServer(tmp_path)
    # What ann made: a dataset and a run, as a signed-in training leaves them.
    monkeypatch.setenv("CLASSIFIER_WORK_DIR", str(app.work))
    monkeypatch.setenv("CLASSIFIER_RUNS_DIR", str(app.runs))
    saved = save_zip(make_zip(tmp_path / "anns.zip", class_entries(per_class=4)), owner="ann@example.com")
    run = app.runs / trained_run.name
    shutil.copytree(trained_run, run)
    write_json(run / MARKER, {**read_json(run / MARKER), "owner": "ann@example.com", "dataset_id": saved.id})
    with pytest.raises(access.NotAllowed, match=r"Only ann@example\.com or an admin may delete the run"):
        delete_run(run, "bob@example.com")  # core refuses, whatever a page shows

    with provider() as issuer:
        app.flags = write_secrets(tmp_path, app.port, issuer, CLASSIFIER_ADMINS="boss@example.com")
        app.start()
        try:
            with chromium() as browser:
                ann, bob, boss = (new_page(browser) for _ in range(3))
                with evidence_on_failure([ann, bob, boss], app, tmp_path):
                    for page, email in ((ann, "ann@example.com"), (bob, "bob@example.com"),
                                        (boss, "boss@example.com")):  # fmt: skip
                        page.goto(app.url)
                        settle(page)
                        sign_in(page, email)
                        settle(page)
                        expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()

                    # Bob sees ann's run and dataset, read-only.
                    bob.goto(f"{app.url}/runs?run={run.name}")
                    expect(bob.get_by_text("Trained by ann@example.com: only they or an admin may delete it.")) \
                        .to_be_visible()  # fmt: skip
                    expect(bob.get_by_role("button", name="Delete run")).to_have_count(0)
                    bob.goto(f"{app.url}/?dataset={saved.id}")
                    settle(bob)
                    expect(bob.get_by_role("heading", name="anns.zip")).to_be_visible()
                    expect(bob.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
                    assert_no_traceback(bob)

                    # Ann may delete her run; so may an admin, who does.
                    ann.goto(f"{app.url}/runs?run={run.name}")
                    expect(ann.get_by_role("button", name="Delete run")).to_be_visible()
                    boss.goto(f"{app.url}/runs?run={run.name}")
                    expect(boss.get_by_role("button", name="Delete run")).to_be_visible()
                    settle(boss)  # a click during the page's first run would be drawn over
                    boss.get_by_role("button", name="Delete run").click()
                    confirm = boss.get_by_role("button", name="Yes, delete it")
                    expect(confirm).to_be_visible()
                    confirm.click()
                    expect(boss.get_by_text(f"Deleted run {run.name}.")).to_be_visible()
                    assert not run.exists()
                    assert_no_traceback(boss)
        finally:
            app.stop()
