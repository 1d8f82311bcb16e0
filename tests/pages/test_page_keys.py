"""API keys on the Runs page through AppTest: made by whoever may change the run, shown once with a curl call,
listed with their use, revoked; hidden from everyone else."""

from __future__ import annotations

from pagetest import assert_clean, button, copy_run, open_app

from core.workspace import access, keys
from core.workspace.runs import MARKER, read_json, write_json

PANEL = "API keys: classify with this run from your own code"


def test_make_list_and_revoke_a_key_for_a_run(trained_run):
    run = copy_run(trained_run)
    at = open_app("pages/runs.py")
    assert PANEL in [e.label for e in at.expander]
    at.text_input(key=f"api_key_name_{run.name}").input("shop scanner").run()
    button(at, "Make a key").click().run()
    assert_clean(at)
    token = at.code[0].value
    assert token.startswith("ick_") and f"-F files=@photo.jpg ./api/v1/runs/{run.name}/predict" in at.code[1].value
    table = at.dataframe[-1].value
    assert list(table["name"]) == ["shop scanner"] and list(table["state"]) == ["active"] and table["uses"][0] == 0
    assert keys.authenticate(token, run.name).name == "shop scanner"  # the key shown works
    at.run()
    assert at.dataframe[-1].value["uses"][0] == 1
    fresh = open_app("pages/runs.py")  # another session (a reload, a colleague): the key is not shown again
    assert not [c for c in fresh.code if token in c.value]

    button(at, "Revoke").click().run()
    assert_clean(at)
    assert keys.list_keys(access.OPERATOR)[0].state == "revoked"
    assert list(at.dataframe[-1].value["state"]) == ["revoked"]
    assert "revoked: it no longer works" in " ".join(s.value for s in at.success)


def test_an_empty_name_is_refused_in_words(trained_run):
    run = copy_run(trained_run)
    at = open_app("pages/runs.py")
    button(at, "Make a key").click().run()
    assert_clean(at)
    assert any("Give the key a name" in e.value for e in at.error)
    assert keys.keys_of_run(run.name, access.OPERATOR) == []


def test_someone_elses_run_shows_no_key_controls(trained_run):
    run = copy_run(trained_run)
    write_json(run / MARKER, {**read_json(run / MARKER), "owner": "ann@example.com"})
    at = open_app("pages/runs.py")
    assert PANEL not in [e.label for e in at.expander]
