"""The demo page a Share link opens, and the Share control on Runs, through AppTest and the app's router."""

from __future__ import annotations

import re
import time

import pytest
from conftest import COLORS, jpeg_bytes
from pagetest import APP, CLASSES, SCRIPT_TIMEOUT, assert_clean, button, copy_run, open_app, texts
from streamlit.testing.v1 import AppTest

from core.publish.card import facts
from core.workspace import share


def open_demo(run_id: str, key: str | None) -> AppTest:
    """The app opened at a Share link, as a new browser session would."""
    at = AppTest.from_file(APP, default_timeout=SCRIPT_TIMEOUT)
    at.query_params["demo"] = run_id
    if key is not None:
        at.query_params["key"] = key
    at.run()
    assert_clean(at)
    return at


def answer(at: AppTest) -> str:
    headings = [m for m in texts(at.markdown) if m.startswith("## ")]
    assert len(headings) == 1, texts(at.markdown)
    return headings[0].removeprefix("## ")


def test_the_demo_shows_one_model_alone_and_answers_a_photo(trained_run, monkeypatch):
    run = copy_run(trained_run)
    # The owner's line comes from the model card (written and tested in test_model_card.py).
    monkeypatch.setattr(facts, "purpose", lambda run_dir: "Tells red, green and blue cards apart.")
    at = open_demo(run.name, share.share(run))

    assert texts(at.title) == ["colours classifier"]  # the dataset's name: a stakeholder reads no run ids
    assert "Tells red, green and blue cards apart." in texts(at.markdown)
    assert f"It tells apart 3 classes: {', '.join(sorted(CLASSES))}. Model {run.name}." in texts(at.caption)
    # Nothing else: no sidebar (no menu, account or job status), no buttons, no links to other pages.
    assert not at.sidebar.children
    assert not at.button and not at.get("page_link") and not at.selectbox and not at.get("download_button")
    assert [t.label for t in at.toggle] == ["Use the camera"]
    assert [e.label for e in at.expander] == ["About this model"]
    assert not at.get("camera_input")  # behind its toggle: no camera prompt until asked for

    at.file_uploader[0].set_value(("red.jpg", jpeg_bytes(COLORS["red"], seed=7), "image/jpeg")).run()
    assert_clean(at)
    assert answer(at) in CLASSES  # the run has no threshold: always an answer
    assert any(re.fullmatch(r"\*\*\d+%\*\* confident", m) for m in texts(at.markdown))
    assert len(at.get("vega_lite_chart")) == 1  # the top 3
    assert len(at.get("image")) == 1  # the photo

    at.toggle(key="demo_gradcam").set_value(True).run()
    assert_clean(at)
    assert len(at.get("image")) == 2  # and where the model looked
    assert not at.button and not at.sidebar.children

    at.toggle(key="demo_camera_on").set_value(True).run()
    assert_clean(at)
    assert len(at.get("camera_input")) == 1


def test_below_the_threshold_the_demo_says_not_sure_with_the_best_guess(trained_run):
    from core.model import calibration

    run = copy_run(trained_run)
    calibration.set_threshold(run, 0.999, coverage=0.4, accuracy=0.96)
    at = open_demo(run.name, share.share(run))
    at.file_uploader[0].set_value(("blue.png", jpeg_bytes(COLORS["blue"], fmt="PNG"), "image/png")).run()
    assert_clean(at)
    assert answer(at) == "Not sure"
    guess = next(m for m in texts(at.markdown) if m.startswith("Best guess **"))
    assert guess.split("**")[1] in CLASSES and "below this model's 100% threshold" in guess


def test_a_file_that_is_no_image_gets_a_sentence(trained_run):
    run = copy_run(trained_run)
    at = open_demo(run.name, share.share(run))
    at.file_uploader[0].set_value(("notes.txt", b"not an image", "text/plain")).run()
    assert_clean(at)
    assert "**notes.txt** cannot be read" in at.error[0].value
    assert not [m for m in texts(at.markdown) if m.startswith("## ")]
    assert [e.label for e in at.expander] == ["About this model"]  # the rest of the page stays


def test_a_busy_demo_asks_the_visitor_to_wait_instead_of_answering(trained_run, monkeypatch):
    run = copy_run(trained_run)
    share._uses.pop(run.name, None)  # this process's count of the run's answers, from other tests
    monkeypatch.setenv("CLASSIFIER_DEMO_PER_MINUTE", "1")
    at = open_demo(run.name, share.share(run))
    at.file_uploader[0].set_value(("red.jpg", jpeg_bytes(COLORS["red"], seed=7), "image/jpeg")).run()
    assert answer(at) in CLASSES
    at.run()  # the same visitor again, or another one, within the minute
    assert_clean(at)
    assert not [m for m in texts(at.markdown) if m.startswith("## ")]
    [busy] = texts(at.warning)
    assert busy.startswith("This demo is answering many photos right now (at most 1 a minute): try again in ")
    share._uses.pop(run.name, None)


def test_a_link_to_a_deleted_run_says_the_model_was_removed(trained_run):
    from core.workspace.runs import delete_run

    run = copy_run(trained_run)
    token = share.share(run)
    delete_run(run)
    at = open_demo(run.name, token)
    assert [e.value for e in at.error] == [share.REMOVED]
    assert not at.file_uploader and not at.title and not at.sidebar.children


def test_a_wrong_missing_or_withdrawn_key_says_the_link_is_no_longer_valid(trained_run):
    run = copy_run(trained_run)
    token = share.share(run)
    for key in ("wrong", "", None):
        at = open_demo(run.name, key)
        assert [e.value for e in at.error] == [share.INVALID], key
        assert not at.file_uploader and not at.title
    share.unshare(run)
    at = open_demo(run.name, token)
    assert "no longer valid" in at.error[0].value
    at = open_demo("../" + run.name, token)
    assert "was removed" in at.error[0].value


def shown_link(at, run) -> tuple[str, str]:
    """The demo link the page shows (once), and its key."""
    [link] = [c.value for c in at.code]
    prefix = f"./?demo={run.name}&key="  # relative: AppTest has no browser address
    assert link.startswith(prefix), link
    return link, link.removeprefix(prefix)


def test_share_on_runs_shows_the_link_once_to_its_maker_and_stop_sharing_withdraws_it(trained_run):
    run = copy_run(trained_run)
    at = open_app("pages/runs.py")
    assert not at.code and not at.get("link_button")
    at.selectbox(key=f"share_expires_{run.name}").set_value("7 days")
    button(at, "Share").click().run()
    assert_clean(at)
    link, token = shown_link(at, run)
    assert share.open_shared(run.name, token).path == run
    assert share.sharing(run).expires == pytest.approx(time.time() + 7 * 86400, abs=120)
    assert [b.proto.url for b in at.get("link_button")] == [link]
    assert any(m.startswith("**Shared** by a guest on ") and ", until " in m for m in texts(at.markdown))
    assert not [b for b in at.button if b.label == "Share"]

    at.run()  # a rerun in the same session: still shown
    assert shown_link(at, run) == (link, token)
    colleague = open_app("pages/runs.py")  # another visitor sees that it is shared, never its key
    assert not colleague.code and not colleague.get("link_button")
    assert any(m.startswith("**Shared** by a guest on ") for m in texts(colleague.markdown))

    button(at, "Make the new link").click().run()  # a new key: the old link stops working
    assert_clean(at)
    _, new = shown_link(at, run)
    assert new != token and share.open_shared(run.name, new).path == run
    assert "no longer valid" in open_demo(run.name, token).error[0].value

    button(at, "Yes, stop sharing").click().run()
    assert_clean(at)
    assert share.sharing(run) is None
    assert f"Stopped sharing {run.name}: its link no longer opens it." in texts(at.success)
    assert not at.code
    button(at, "Share")
    assert "no longer valid" in open_demo(run.name, new).error[0].value


def test_only_the_owner_may_share_or_stop_sharing_a_run_that_has_one(trained_run):
    from core.workspace.runs import MARKER, read_json, write_json

    run = copy_run(trained_run)
    write_json(run / MARKER, {**read_json(run / MARKER), "owner": "ann@example.com"})
    share.share(run, "ann@example.com")
    at = open_app("pages/runs.py")  # a guest: sign-in is off in tests
    assert not at.code and any("Shared** by ann@example.com" in m for m in texts(at.markdown))
    assert not [b for b in at.button if b.label in ("Yes, stop sharing", "Make the new link", "Share")]
    assert (
        "Trained by ann@example.com: only they or an admin may see its link, make a new one or stop sharing it."
        in texts(at.caption)
    )
    share.unshare(run, "ann@example.com")
    at = open_app("pages/runs.py")
    assert not [b for b in at.button if b.label == "Share"]  # nothing to share for a visitor of someone's run


DEMO_WITHOUT_TENSORFLOW = """
import sys
from streamlit.testing.v1 import AppTest

at = AppTest.from_file({app!r}, default_timeout=120)
at.query_params.update({{"demo": {run!r}, "key": {key!r}}})
at.run()
assert not at.exception, [e.value for e in at.exception]
assert [t.value for t in at.title] == ["colours classifier"] and at.file_uploader
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def test_the_demo_opens_without_loading_tensorflow_until_a_photo_arrives(trained_run):
    """A stakeholder sees the page at once: TensorFlow's seconds of loading wait for the first photo."""
    import subprocess
    import sys

    from pagetest import ROOT

    run = copy_run(trained_run)
    code = DEMO_WITHOUT_TENSORFLOW.format(app=str(APP), run=run.name, key=share.share(run))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_finished_training_offers_share_too(trained_run, tmp_path):
    import json

    from pagetest import load

    from core.jobs.states import COMPLETED
    from core.workspace import db

    run = copy_run(trained_run)
    ds = load(tmp_path)
    metrics = {"epochs_completed": 1, "seconds": 3.0, "val_accuracy": 0.5, "val_loss": 1.0, "train_accuracy": 0.5}
    with db.connect(write=True) as con:  # the job of this run, as the server records it after the training
        con.execute(
            "INSERT INTO jobs (id, kind, state, owner, dataset_id, params, created, finished, metrics) "
            "VALUES (?, 'train', ?, '', ?, '{}', 0, 1, ?)",
            (run.name, COMPLETED, ds.id, json.dumps(metrics)),
        )
    at = open_app("pages/train.py", current_job=run.name, dataset=ds.id)
    assert any("the model is saved" in s for s in texts(at.success))
    button(at, "Share").click().run()
    assert_clean(at)
    _, token = shown_link(at, run)
    assert share.open_shared(run.name, token).path == run
    button(at, "Train another model")
