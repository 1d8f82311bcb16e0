"""core.share: a run's demo key, kept in its folder; links opened with it, refused once withdrawn or deleted."""

from __future__ import annotations

import re
import shutil

import pytest

from core import access, share
from core.errors import UserError
from core.runs import MARKER, RUNS_ENV, delete_run, read_json, write_json


@pytest.fixture
def run(trained_run, tmp_path, monkeypatch):
    """A copy of the module's real run, in this test's own runs folder."""
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    return shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)


def refused(message: str):
    return pytest.raises(share.ShareError, match=f"^{re.escape(message)}$")


def test_share_gives_one_stable_key_that_opens_the_run_until_it_is_unshared(run):
    assert share.link_token(run) is None and share.sharing(run) is None
    token = share.share(run)
    assert len(token) >= 20 and token.replace("-", "").replace("_", "").isalnum()  # URL-safe, 128 bits
    assert share.share(run, "ann@example.com") == token  # shared again: the same link, still working
    assert share.link_token(run) == token
    saved = read_json(run / share.SHARE_FILE)
    assert saved["token"] == token and saved["by"] == "" and saved["at"][:2] == "20"
    assert share.open_shared(run.name, token).path == run

    share.unshare(run)
    assert not (run / share.SHARE_FILE).exists() and share.link_token(run) is None
    with refused(share.INVALID):
        share.open_shared(run.name, token)
    again = share.share(run)
    assert again != token  # a withdrawn link stays dead
    with refused(share.INVALID):
        share.open_shared(run.name, token)
    assert share.open_shared(run.name, again).id == run.name


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


def test_only_the_owner_or_an_admin_may_stop_sharing_a_run_that_has_an_owner(run, monkeypatch):
    write_json(run / MARKER, {**read_json(run / MARKER), "owner": "ann@example.com"})
    token = share.share(run, "bob@example.com")  # anyone who sees it may share it
    assert share.sharing(run).by == "bob@example.com"
    for stranger in ("bob@example.com", access.GUEST):
        with pytest.raises(access.NotAllowed, match=r"^Only ann@example\.com or an admin may stop sharing the run"):
            share.unshare(run, stranger)
    assert share.open_shared(run.name, token)  # still shared
    share.unshare(run, "ANN@example.com")
    assert share.link_token(run) is None

    monkeypatch.setenv(access.ADMINS_ENV, "boss@example.com")
    share.share(run)
    share.unshare(run, "boss@example.com")
    assert share.link_token(run) is None


def test_a_damaged_share_file_shares_nothing_and_can_be_replaced(run):
    (run / share.SHARE_FILE).write_text("{not json")
    assert share.link_token(run) is None
    with refused(share.INVALID):
        share.open_shared(run.name, "{not json")
    token = share.share(run)
    assert share.open_shared(run.name, token).id == run.name
