"""core.workspace.keys: API keys made, listed, revoked and checked; only their hash is kept; the one access rule."""

from __future__ import annotations

import shutil
import sqlite3
import time

import pytest

from core import settings
from core.util.errors import UserError
from core.workspace import access, db, keys
from core.workspace.runs import MARKER, read_json, write_json

ISSUER = "https://id.example.com"


@pytest.fixture
def run(trained_run, tmp_path, monkeypatch):
    """A copy of the module's real run, in this test's own runs folder (a guest's run: everyone's)."""
    monkeypatch.setenv("CLASSIFIER_RUNS_DIR", str(tmp_path / "runs"))
    return shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)


def user(sub: str, email: str) -> str:
    return access.sign_in({"iss": ISSUER, "sub": sub, "email": email})


def owned_by(run, owner: str):
    write_json(run / MARKER, {**read_json(run / MARKER), "owner": owner})


def test_a_key_is_shown_once_kept_as_a_hash_and_counts_its_uses(run):
    key, token = keys.create(run.name, access.GUEST, "shop scanner")
    assert token.startswith(f"ick_{key.id}_") and len(token) > 40
    assert key.state == "active" and key.uses == 0 and key.last_used is None and key.run_id == run.name
    with sqlite3.connect(settings.current().db_path) as con:  # nothing in the database gives the key out again
        dumped = "\n".join(con.iterdump())
    assert token not in dumped and token.rsplit("_", 1)[-1] not in dumped
    assert keys.authenticate(token, run.name).id == key.id
    keys.authenticate(token, run.name)
    used = keys.get(key.id)
    assert used.uses == 2 and used.last_used is not None and time.time() - used.last_used < 60


def test_refusals_say_why_in_a_sentence(run, tmp_path):
    key, token = keys.create(run.name, access.GUEST, "app")
    with pytest.raises(keys.NoKey, match="Authorization: Bearer"):
        keys.authenticate("", run.name)
    for wrong in ("nonsense", token[:-1] + ("A" if token[-1] != "A" else "B"), f"ick_{key.id}", "ick_zz_" + "x" * 32):
        with pytest.raises(keys.UnknownKey, match="not known to this server"):
            keys.authenticate(wrong, run.name)
    with pytest.raises(keys.KeyNotAllowed, match=f"may only use the run {run.name}"):
        keys.authenticate(token, "another-run")
    keys.revoke(key.id, access.GUEST)
    with pytest.raises(keys.KeyNotAllowed, match="was revoked"):
        keys.authenticate(token, run.name)
    assert keys.get(key.id).uses == 0  # refused uses are not counted


def test_an_expired_key_says_so(run):
    key, token = keys.create(run.name, access.GUEST, "app", expires_days=1)
    assert keys.authenticate(token, run.name)
    with db.connect(write=True) as con:
        con.execute("UPDATE api_keys SET expires = ? WHERE id = ?", (time.time() - 1, key.id))
    assert keys.get(key.id).state == "expired"
    with pytest.raises(keys.KeyNotAllowed, match="has expired"):
        keys.authenticate(token, run.name)


@pytest.mark.parametrize("days", [0, -1, 1e9, float("nan"), float("inf")])
def test_bad_expiry_and_names_are_refused_and_nothing_is_made(run, days):
    with pytest.raises(UserError, match="expires after 1 to"):
        keys.create(run.name, access.GUEST, "app", expires_days=days)
    for name in ("", "   ", "x" * 101, "two\nlines"):
        with pytest.raises(UserError, match="name"):
            keys.create(run.name, access.GUEST, name)
    with pytest.raises(keys.UnknownRun, match="There is no run"):
        keys.create("../../etc", access.GUEST, "app")
    assert keys.list_keys(access.OPERATOR) == []


def test_only_the_runs_owner_or_an_admin_makes_sees_and_revokes_its_keys(run, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@example.com")
    ann, bob, boss = user("a", "ann@example.com"), user("b", "bob@example.com"), user("c", "boss@example.com")
    owned_by(run, ann)
    for who in (bob, access.GUEST):
        with pytest.raises(access.NotAllowed, match=r"Only ann@example\.com or an admin may make an API key"):
            keys.create(run.name, who, "app")
    key, _ = keys.create(run.name, ann, "app")
    assert [k.id for k in keys.list_keys(ann)] == [key.id] and keys.list_keys(bob) == []
    assert [k.id for k in keys.list_keys(boss)] == [key.id]
    with pytest.raises(access.NotAllowed, match="revoke the API key"):
        keys.revoke(key.id, bob)
    assert keys.get(key.id).state == "active"
    assert keys.revoke(key.id, boss).state == "revoked"
    with pytest.raises(UserError, match="There is no API key"):
        keys.revoke("nope", boss)


def test_an_admins_key_for_all_of_one_owners_runs(run, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@example.com")
    ann, boss = user("a", "ann@example.com"), user("c", "boss@example.com")
    owned_by(run, ann)
    other = shutil.copytree(run, run.parent / "20200101-000000-second-abcd")
    theirs = shutil.copytree(run, run.parent / "20200101-000000-bobs-abcd")
    owned_by(theirs, user("b", "bob@example.com"))
    with pytest.raises(access.NotAllowed, match="Only an admin"):
        keys.create(run.name, ann, "all", all_runs=True)
    key, token = keys.create(run.name, boss, "all", all_runs=True)
    assert key.run_id == "" and "every run of ann@example.com" in key.scope
    assert keys.authenticate(token, run.name) and keys.authenticate(token, other.name)
    with pytest.raises(keys.KeyNotAllowed, match=r"may only use the runs of ann@example\.com"):
        keys.authenticate(token, theirs.name)
    with pytest.raises(keys.UnknownRun, match="There is no run"):
        keys.authenticate(token, "gone")
