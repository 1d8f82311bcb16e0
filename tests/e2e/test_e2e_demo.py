"""End to end in a real browser: Share a run on the Runs page, open its link as a stakeholder on a phone (390 px
wide, a new browser context), upload a photo and read the one large answer; no menu, no sidebar, nothing wider
than the screen. A screenshot at 390 px is kept in the test's folder (and copied to /tmp/demo_390.png).
"""

from __future__ import annotations

import shutil

import pytest
from browser import MARKS, WAIT, AppServer, assert_no_traceback, chromium, evidence_on_failure, new_page, settle
from conftest import COLORS, jpeg_bytes

pytestmark = MARKS
PHONE = {"width": 390, "height": 844}
CLASSES = ("red", "green", "blue")
SCREENSHOT_COPY = "/tmp/demo_390.png"
# The bottom of the page's content, however far its scrolling container has scrolled.
PAGE_HEIGHT = """() => {
    const block = document.querySelector('[data-testid=stMainBlockContainer]');
    let top = block.getBoundingClientRect().top;
    for (let e = block.parentElement; e; e = e.parentElement) top += e.scrollTop;
    return Math.ceil(top + block.offsetHeight);
}"""


@pytest.fixture
def server(tmp_path, trained_run):
    app = AppServer(tmp_path)
    shutil.copytree(trained_run, app.runs / trained_run.name)  # a real tiny run, as a training leaves it
    app.start()
    try:
        yield app
    finally:
        app.stop()


def test_share_a_run_and_use_its_demo_on_a_phone(server, trained_run, tmp_path):
    from playwright.sync_api import expect

    photo = tmp_path / "card.png"
    photo.write_bytes(jpeg_bytes(COLORS["green"], size=(64, 48), seed=11, fmt="PNG"))
    run_id = trained_run.name
    with chromium() as browser:
        owner = new_page(browser)
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        phone = context.new_page()
        phone.set_default_timeout(WAIT)
        with evidence_on_failure([owner, phone], server, tmp_path):
            # ---- The owner shares the run on Runs and reads the link off the page.
            owner.goto(f"{server.url}/runs?run={run_id}")
            expect(owner.get_by_role("heading", name="Runs")).to_be_visible()
            settle(owner)
            owner.get_by_role("button", name="Share").click()
            code = owner.get_by_test_id("stCode")
            expect(code).to_contain_text(f"?demo={run_id}&key=")
            link = code.inner_text().strip()
            assert link.startswith(f"{server.url}/?demo={run_id}&key="), link
            expect(owner.get_by_role("link", name="Open the demo")).to_have_attribute("href", link)
            assert_no_traceback(owner)

            # ---- A stakeholder opens it on a phone, in a browser of their own: that model, nothing else.
            phone.goto(link)
            expect(phone.get_by_role("heading", name="colours classifier")).to_be_visible()
            settle(phone)
            expect(phone.get_by_text("It tells apart 3 classes")).to_be_visible()
            phone.locator("input[type=file]").set_input_files(photo)
            heading = phone.locator(".st-key-demo_answer h2")
            expect(heading).to_be_visible()
            settle(phone)
            assert heading.inner_text().strip() in (*CLASSES, "Not sure")
            expect(phone.get_by_test_id("stSidebar")).to_have_count(0)
            expect(phone.get_by_test_id("stSidebarNav")).to_have_count(0)
            expect(phone.get_by_role("button", name="Share")).to_have_count(0)
            assert_no_traceback(phone)
            widths = phone.evaluate(
                "() => [document.documentElement.scrollWidth,"
                " document.querySelector('[data-testid=stMain]').scrollWidth]"
            )
            assert max(widths) <= PHONE["width"], widths  # nothing to scroll sideways
            # Streamlit scrolls inside its main container, not the document: a viewport as tall as the page lets
            # one screenshot hold all of it, still 390 px wide.
            height = phone.evaluate(PAGE_HEIGHT)
            phone.set_viewport_size({"width": PHONE["width"], "height": max(PHONE["height"], height)})
            settle(phone)
            shot = tmp_path / "demo_390.png"
            phone.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, SCREENSHOT_COPY)
        context.close()
