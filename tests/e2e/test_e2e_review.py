"""End to end in a real browser: three images wait in a saved dataset's review queue; a reviewer labels them with the
keyboard alone (1, 2, 1), then makes them the dataset's next version and reads its number on the page.
"""

from __future__ import annotations

import pytest
from browser import MARKS, AppServer, assert_no_traceback, chromium, evidence_on_failure, new_page, settle
from conftest import class_entries, encoded, make_zip, photo

pytestmark = MARKS


@pytest.fixture
def server(tmp_path, monkeypatch):
    app = AppServer(tmp_path)
    monkeypatch.setenv("CLASSIFIER_WORK_DIR", str(app.work))  # this process queues into the server's workspace
    app.start()
    try:
        yield app
    finally:
        app.stop()


def test_label_three_queued_images_with_the_keyboard_and_commit(server, tmp_path):
    from playwright.sync_api import expect

    from core.workspace import datasets, review, versions

    saved = datasets.save_zip(make_zip(tmp_path / "colours.zip", class_entries(per_class=4)))
    tops = [[("red", 0.55), ("blue", 0.45)], [("blue", 0.6), ("red", 0.4)], [("red", 0.7), ("blue", 0.3)]]
    items = [review.enqueue(saved.id, encoded(photo(i, (96, 72)), "JPEG"), f"photo{i}.jpg", top=top, source="api")
             for i, top in enumerate(tops)]  # fmt: skip
    classes = datasets.open_dataset(saved.id).classes  # the keys' order: 1 = classes[0]
    with chromium() as browser:
        page = new_page(browser)
        with evidence_on_failure(page, server, tmp_path):
            page.goto(f"{server.url}/review?dataset={saved.id}")
            expect(page.get_by_role("heading", name="Review")).to_be_visible()
            settle(page)
            expect(page.get_by_text("0 of 3 reviewed")).to_be_visible()
            for n, key in enumerate(["1", "2", "1"], start=1):
                page.keyboard.press(key)
                expect(page.get_by_text(f"{n} of 3 reviewed")).to_be_visible()
                settle(page)
            expect(page.get_by_text("Nothing waits for a label")).to_be_visible()
            page.get_by_label("Message").fill("three photos labelled by keyboard")
            page.get_by_label("Message").press("Enter")
            settle(page)
            page.get_by_role("button", name="Add the 3 labelled images as a new version").click()
            expect(page.get_by_text("Made version 2 of the dataset: three photos labelled by keyboard")).to_be_visible()
            settle(page)
            expect(page.get_by_text("The dataset is at version 2")).to_be_visible()
            assert_no_traceback(page)
    labels = {e.hash: e.label for e in versions.newest(saved.id).entries}
    assert [labels[it.hash] for it in sorted(items, key=lambda it: it.priority)] == [
        classes[0], classes[1], classes[0]
    ]  # fmt: skip
