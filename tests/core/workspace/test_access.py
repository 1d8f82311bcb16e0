"""core.workspace.access: who a signed-in user is, and the one rule every change of state asks, walked through every
mutating entry point of core as a guest, another user, the owner and an admin."""

from __future__ import annotations

import hashlib
import importlib
import shutil
import unicodedata
from pathlib import Path

import pytest
from conftest import class_entries, make_zip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.evaluate import label_issues
from core.jobs import kinds, states
from core.jobs import registry as jobs
from core.model import calibration
from core.publish.card import facts
from core.util.errors import UserError
from core.workspace import access, datasets, db, decisions, keys, records, runs, share, versions

ISSUER = "https://id.example.com"


def claims(sub: str, email: str | None = None, **more) -> dict:
    found = {"iss": ISSUER, "sub": sub, **more}
    if email is not None:
        found["email"] = email
    return found


# ---------------------------------------------------------------------------------------------- identity


def test_a_user_is_the_providers_subject_and_issuer_with_the_email_for_display():
    ann = access.sign_in(claims("u-1", "Ann@Example.com"))
    assert ann == f"{ISSUER}|u-1"
    assert access.email_of(ann) == "Ann@Example.com" and access.display(ann) == "Ann@Example.com"
    # The e-mail changes at the provider: the same user, shown with the new address.
    assert access.sign_in(claims("u-1", "ann@new.example.com")) == ann
    assert access.display(ann) == "ann@new.example.com"
    # Someone else given the same address later is someone else.
    assert access.sign_in(claims("u-2", "ann@new.example.com")) != ann


def test_a_signed_in_user_without_an_email_is_that_user_not_a_guest():
    someone = access.sign_in(claims("no-mail"))
    assert someone != access.GUEST and access.display(someone) == "a signed-in user"
    assert access.may_change(someone, someone) and not access.may_change(access.GUEST, someone)
    assert not access.may_change(someone, access.sign_in(claims("other")))


@pytest.mark.parametrize("bad", [claims(""), {"sub": "x"}, {"iss": ISSUER}, {}, {"sub": 5, "iss": ISSUER}])
def test_an_answer_without_subject_or_issuer_is_refused_in_words(bad):
    with pytest.raises(access.SignInRefused, match="did not say who you are"):
        access.sign_in(bad)


@pytest.mark.parametrize("verified", [False, "false", 0, None])
def test_an_email_the_provider_has_not_verified_is_refused(verified):
    with pytest.raises(access.SignInRefused, match=r"not verified: verify it with them"):
        access.sign_in(claims("u-3", "boss@example.com", email_verified=verified))
    assert access.sign_in(claims("u-3", "boss@example.com", email_verified=True))


def test_look_alike_addresses_never_match_an_admin(monkeypatch):
    monkeypatch.setenv("CLASSIFIER_ADMINS", "kate@example.com, boss@example.com")
    assert access.is_admin(access.sign_in(claims("k-0", "KATE@Example.COM")))  # case does not matter
    for n, fake in enumerate([
        "\u212aate@example.com",  # KELVIN SIGN: NFKC turns it into a K, str.lower() into a k
        "k\u0430te@example.com",  # a Cyrillic а among Latin letters
        "ｋａｔｅ@example.com",  # fullwidth letters
        "kate@example.com\u200b",  # a zero-width space
        "kate\u2028@example.com",  # a line separator
        "bo\u017ft@example.com",  # LATIN SMALL LETTER LONG S: NFKC makes it an s
    ]):  # fmt: skip
        user = access.sign_in(claims(f"fake-{n}", fake))
        assert not access.is_admin(user), fake
        assert access.display(user) == fake  # shown as given, never trusted
        with pytest.raises(access.NotAllowed):
            access.check(user, "kate@example.com", "delete the run X")  # nor matched against an owner's e-mail


def test_an_owner_recorded_by_email_is_matched_by_the_users_trusted_email():
    ann = access.sign_in(claims("u-9", "ann@example.com"))
    assert access.may_change(ann, "ANN@example.com")
    impostor = access.sign_in(claims("u-10", "\u212aann@example.com"))
    assert not access.may_change(impostor, "kann@example.com")


def test_the_command_line_is_an_admin_and_says_so():
    assert access.is_admin(access.OPERATOR) and access.may_change(access.OPERATOR, "ann@example.com")
    assert access.display(access.OPERATOR) == "the server's command line"


text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text)
def test_canonical_emails_are_stable_and_never_hold_control_spaces_or_compatibility_forms(address):
    canon = access.canonical_email(address)
    if canon is None:
        return
    assert access.canonical_email(canon) == canon  # comparing twice gives the same answer
    assert not any(unicodedata.category(ch)[0] in "CZ" for ch in canon)
    assert "@" in canon


@settings(max_examples=300, deadline=None)
@given(text)
def test_no_address_other_than_the_admins_own_is_an_admin(address):
    """Any address that passes as the admin's compares equal to it after NFKC + casefold, and is not a
    compatibility look-alike of it."""
    canon = access.canonical_email(address)
    if canon == "boss@example.com":
        assert unicodedata.normalize("NFKC", address) == address
        assert address.casefold() == "boss@example.com"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sub=text, iss=text, email=text)
def test_any_claims_give_a_user_or_a_sentence_never_a_crash(sub, iss, email):
    try:
        key, shown = access.identity({"sub": sub, "iss": iss, "email": email})
    except access.SignInRefused as exc:
        assert str(exc).endswith(".")
        return
    assert key == f"{iss.strip()}|{sub.strip()}" and key != access.GUEST and shown == email.strip()
    assert not access.is_admin(key) or access.canonical_email(shown) in access.admins()


# ---------------------------------------------------------------------------------------------- the walk


@pytest.fixture
def people(monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@example.com")
    return {
        "guest": access.GUEST,
        "other": access.sign_in(claims("bob", "bob@example.com")),
        "owner": access.sign_in(claims("ann", "ann@example.com")),
        "admin": access.sign_in(claims("boss", "boss@example.com")),
    }


@pytest.fixture
def workspace(trained_run, tmp_path, people):
    """The owner's run (with a share, a label search result and a finished job) and the owner's saved dataset."""
    run = shutil.copytree(trained_run, runs.runs_dir() / trained_run.name)
    runs.write_json(run / runs.MARKER, {**runs.read_json(run / runs.MARKER), "owner": people["owner"]})
    share.share(run, people["owner"])
    key, _ = keys.create(run.name, people["owner"], "owner's key")
    saved = datasets.save_zip(make_zip(tmp_path / "mine.zip", class_entries(per_class=3)), "mine", people["owner"])
    (tmp_path / "a-file").write_text("an export cannot be written below a file")
    registry = jobs.JobRegistry(dispatch=False)
    queued = registry.submit_task(kinds.EVALUATE, {"run": run.name}, owner=people["owner"])
    finished = registry.submit_task(kinds.EVALUATE, {"run": run.name}, owner=people["owner"])
    with db.connect(write=True) as con:
        con.execute("UPDATE jobs SET state = ?, finished = 1 WHERE id = ?", (states.FAILED, finished.id))
    return {"run": run, "dataset": saved, "registry": registry, "queued": queued.id, "finished": finished.id,
            "unwritable": tmp_path / "a-file" / "exports", "key": key.id}  # fmt: skip


def _files() -> dict[str, str]:
    out = {}
    for top in (runs.runs_dir(), records.datasets_dir()):
        for p in sorted(Path(top).rglob("*")):
            if p.is_file() and not p.name.endswith((".lock", "-wal", "-shm", ".db")):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _rows() -> dict[str, list]:
    with db.connect() as con:
        tables = ("datasets", "jobs", "api_keys", "review_items")
        return {t: [tuple(r) for r in con.execute(f"SELECT * FROM {t} ORDER BY 1")] for t in tables}


def state() -> tuple:
    return _files(), _rows()


# Every state-changing entry point of core, called as `user` on what the owner made.
MUTATIONS = {
    "delete a run": lambda w, u: runs.delete_run(w["run"], u),
    "share a run": lambda w, u: share.share(w["run"], u),
    "stop sharing a run": lambda w, u: share.unshare(w["run"], u),
    "make an API key": lambda w, u: keys.create(w["run"].name, u, "a key"),
    "revoke an API key": lambda w, u: keys.revoke(w["key"], u),
    "set a run's threshold": lambda w, u: calibration.set_threshold(w["run"], 0.5, user=u),
    "describe a run": lambda w, u: facts.set_purpose(w["run"], "Tells cards apart.", u),
    "evaluate a run": lambda w, u: importlib.import_module("core.evaluate.evaluation").evaluate_run(w["run"], user=u),
    "export a run": lambda w, u: importlib.import_module("core.publish.export").export_run(
        w["run"], w["unwritable"], user=u
    ),
    "search a run's labels": lambda w, u: label_issues.find_label_issues(w["run"], folds=1, user=u),
    "queue an evaluation": lambda w, u: w["registry"].submit_task(kinds.EVALUATE, {"run": w["run"].name}, owner=u),
    "queue an export": lambda w, u: w["registry"].submit_task(kinds.EXPORT, {"run": w["run"].name}, owner=u),
    "queue a label search": lambda w, u: w["registry"].submit_task(kinds.LABEL_ISSUES, {"run": w["run"].name}, u),
    "stop a job": lambda w, u: w["registry"].stop(w["queued"], u),
    "restart a job": lambda w, u: w["registry"].restart(w["finished"], u),
    "decide on a label": lambda w, u: decisions.decide(w["dataset"].id, "red/0.jpg", decisions.EXCLUDE, u),
    "rename a dataset": lambda w, u: datasets.rename(w["dataset"].id, "renamed", u),
    "delete a dataset": lambda w, u: datasets.delete(w["dataset"].id, u, force=True),
    "commit a dataset version": lambda w, u: versions.commit(w["dataset"].id, u, "x", add=[(b"x", "a.jpg", "red")]),
    "train a run again": lambda w, u: w["registry"].retrain(w["run"].name, u),
}


@pytest.mark.parametrize("what", list(MUTATIONS))
@pytest.mark.parametrize("who", ["guest", "other", "owner", "admin"])
def test_only_the_owner_or_an_admin_may_change_what_the_owner_made(what, who, people, workspace):
    before = state()
    try:
        MUTATIONS[what](workspace, people[who])
    except access.NotAllowed as exc:
        assert who in ("guest", "other"), f"{who} was refused: {exc}"
        assert str(exc).startswith("Only ann@example.com or an admin may ") and str(exc).endswith(".")
        assert ("you are not signed in" if who == "guest" else "you are signed in as bob@example.com") in str(exc)
        assert state() == before  # refused: nothing changed, on disk or in the database
        return
    except UserError as exc:  # allowed, then stopped by what the call itself checks next (a cheap failure)
        assert who in ("owner", "admin"), f"{who} got past the rule to: {exc}"
        return
    assert who in ("owner", "admin"), f"{who} was allowed to {what}"


def test_a_restarted_job_stays_its_owners(people, workspace):
    new = workspace["registry"].restart(workspace["finished"], people["admin"])
    assert new.owner == people["owner"]


def test_an_evaluation_and_an_export_record_who_made_them(people, workspace):
    from core.evaluate.evaluation import FILE, evaluate_run

    evaluate_run(workspace["run"], user=people["admin"])
    assert runs.read_json(workspace["run"] / FILE)["by"] == people["admin"]


def test_what_a_guest_made_is_everyones(people, trained_run, tmp_path):
    run = shutil.copytree(trained_run, runs.runs_dir() / trained_run.name)  # trained without sign-in
    for who in people.values():
        share.unshare(run, who)
        facts.set_purpose(run, "x", who)
    saved = datasets.save_zip(make_zip(tmp_path / "g.zip", class_entries(per_class=3)), "theirs", access.GUEST)
    datasets.rename(saved.id, "ours", people["other"])
    datasets.delete(saved.id, people["other"], force=True)
    assert records.get(saved.id) is None
