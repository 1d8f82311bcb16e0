"""core.workspace.share: a run's demo key, kept in its folder; links opened with it, refused once withdrawn or
deleted."""

from __future__ import annotations

import hashlib
import re
import shutil
import time

import pytest

from core import settings
from core.util.errors import UserError
from core.workspace import access, share
from core.workspace.runs import MARKER, delete_run, read_json, write_json


@pytest.fixture
def run(trained_run, tmp_path, monkeypatch):
    """A copy of the module's real run, in this test's own runs folder."""
    monkeypatch.setenv("CLASSIFIER_RUNS_DIR", str(tmp_path / "runs"))
    return shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)


def refused(message: str):
    return pytest.raises(share.ShareError, match=f"^{re.escape(message)}$")


def test_share_gives_a_key_that_opens_the_run_until_it_is_unshared_and_keeps_only_its_hash(run):
    assert share.sharing(run) is None
    token = share.share(run)
    assert len(token) >= 20 and token.replace("-", "").replace("_", "").isalnum()  # URL-safe, 128 bits
    saved = read_json(run / share.SHARE_FILE)
    assert token not in (run / share.SHARE_FILE).read_text()  # only the hash is on disk
    assert saved["sha256"] == hashlib.sha256(token.encode()).hexdigest() and saved["by"] == ""
    assert saved["at"][:2] == "20" and saved["expires"] is None
    assert share.sharing(run).digest == saved["sha256"]
    assert share.open_shared(run.name, token).path == run

    again = share.share(run, "ann@example.com")  # shared again: a new key, the old link stops working
    assert again != token and share.sharing(run).by == "ann@example.com"
    with refused(share.INVALID):
        share.open_shared(run.name, token)
    assert share.open_shared(run.name, again).path == run

    share.unshare(run)
    assert not (run / share.SHARE_FILE).exists() and share.sharing(run) is None
    with refused(share.INVALID):
        share.open_shared(run.name, again)


def test_a_link_can_expire_and_then_says_so(run, monkeypatch):
    token = share.share(run, expires_days=2)
    assert share.sharing(run).expires == pytest.approx(time.time() + 2 * 86400, abs=60)
    assert share.open_shared(run.name, token).path == run
    later = time.time() + 2 * 86400 + 1
    monkeypatch.setattr(share.time, "time", lambda: later)
    assert share.sharing(run) is None
    with refused(share.EXPIRED):
        share.open_shared(run.name, token)
    for bad in (0, -1, float("nan"), float("inf"), share.MAX_DAYS + 1, "7"):
        with pytest.raises(UserError, match="expires after 1 to"):
            share.share(run, expires_days=bad)


def test_a_link_made_before_keys_were_hashed_still_opens(run):
    write_json(run / share.SHARE_FILE, {"token": "old-plain-key-1234567890", "by": "", "at": "2026-01-01T00:00:00"})
    assert share.open_shared(run.name, "old-plain-key-1234567890").path == run
    with refused(share.INVALID):
        share.open_shared(run.name, "old-plain-key-123456789")


def test_a_wrong_or_missing_key_is_refused_with_a_sentence(run, tmp_path):
    token = share.share(run)
    other = shutil.copytree(run, tmp_path / "runs" / "20200101-000000-other-0002")
    share.unshare(other)
    other_token = share.share(other)
    for wrong in ("", token[:-1], token + "x", token.upper(), other_token, "ключ", None):
        with refused(share.INVALID):
            share.open_shared(run.name, wrong)
    share.unshare(run)
    with refused(share.INVALID):  # not shared at all
        share.open_shared(run.name, "")


def test_a_deleted_or_unknown_run_says_it_was_removed(run):
    token = share.share(run)
    delete_run(run)
    with refused(share.REMOVED):
        share.open_shared(run.name, token)
    with refused(share.REMOVED):
        share.open_shared("20990101-000000-never-ffff", token)
    with pytest.raises(UserError, match="not a folder"):
        share.share(run)  # nothing is shared for a run that is gone


def test_path_tricks_in_the_run_id_are_refused(run, tmp_path):
    # A shared run outside the runs folder, its key known: no id may reach it.
    outside = shutil.copytree(run, tmp_path / "outside" / run.name)
    token = share.share(outside)
    share.share(run)
    for trick in (f"../outside/{run.name}", str(outside), f"{run.name}/../../outside/{run.name}", "..", ".",
                  f"..%2Foutside%2F{run.name}", f"{run.name}/", f"{run.name}\x00", f" {run.name}"):  # fmt: skip
        with refused(share.REMOVED):
            share.open_shared(trick, token)


def test_only_the_owner_or_an_admin_may_share_share_again_or_stop_sharing(run, monkeypatch):
    write_json(run / MARKER, {**read_json(run / MARKER), "owner": "ann@example.com"})
    token = share.share(run, "ann@example.com")
    for stranger in ("bob@example.com", access.GUEST):
        for what, call in (("stop sharing", share.unshare), ("share", share.share)):
            with pytest.raises(access.NotAllowed, match=rf"^Only ann@example\.com or an admin may {what} the run"):
                call(run, stranger)
    assert share.open_shared(run.name, token)  # still shared, with the same key
    share.unshare(run, "ANN@example.com")
    assert share.sharing(run) is None

    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@example.com")
    token = share.share(run, "boss@example.com")
    assert share.sharing(run).by == "boss@example.com"
    share.unshare(run, "boss@example.com")
    assert share.sharing(run) is None
    share.share(run, access.OPERATOR)  # the server's command line is an admin
    share.unshare(run, access.OPERATOR)


def test_a_damaged_share_file_shares_nothing_and_can_be_replaced(run):
    (run / share.SHARE_FILE).write_text("{not json")
    assert share.sharing(run) is None
    with refused(share.INVALID):
        share.open_shared(run.name, "{not json")
    token = share.share(run)
    assert share.open_shared(run.name, token).id == run.name


def test_a_demo_gives_a_bounded_number_of_answers_a_minute_whoever_asks(monkeypatch):
    monkeypatch.setenv("CLASSIFIER_DEMO_PER_MINUTE", "3")
    run_id = "20200101-000000-rate-0001"
    assert [share.take_answer(run_id, now=100.0 + i) for i in range(3)] == [0.0, 0.0, 0.0]
    assert share.take_answer(run_id, now=103.0) == pytest.approx(57.0)  # the first answer leaves the window at 160
    assert share.take_answer("20200101-000000-other-0002", now=103.0) == 0.0  # another demo has its own
    assert share.take_answer(run_id, now=160.0) == 0.0
    monkeypatch.setenv("CLASSIFIER_DEMO_PER_MINUTE", "lots")
    assert share.demo_rate() == settings.Settings().demo_per_minute
