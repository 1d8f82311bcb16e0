"""python -m core keys | serve: keys made, listed and revoked from the server's shell; mistakes are one line, exit 2."""

from __future__ import annotations

import json
import shutil
import socket

from conftest import assert_user_error, run_cli


def test_keys_create_list_and_revoke(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    made = run_cli("keys", "create", trained_run.name, "--name", "scanner", "--expires", "30", "--store-predictions",
                   env_dir=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("ick_") and "shown once" in made.stderr and "30 days" in made.stderr
    listed = json.loads(run_cli("keys", "list", "--json", env_dir=tmp_path).stdout)
    assert [(k["name"], k["run"], k["state"], k["store_predictions"]) for k in listed] == [
        ("scanner", trained_run.name, "active", True)
    ]
    table = run_cli("keys", "list", env_dir=tmp_path).stdout
    assert "scanner" in table and "never" in table and token not in table
    gone = run_cli("keys", "revoke", listed[0]["id"], env_dir=tmp_path)
    assert gone.returncode == 0 and "revoked" in gone.stderr
    assert json.loads(run_cli("keys", "list", "--json", env_dir=tmp_path).stdout)[0]["state"] == "revoked"


def test_key_mistakes_are_one_line(trained_run, tmp_path):
    assert_user_error(run_cli("keys", "create", "no-such-run", "--name", "x", env_dir=tmp_path), "There is no run")
    shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    bad_days = run_cli("keys", "create", trained_run.name, "--name", "x", "--expires", "0", env_dir=tmp_path)
    assert_user_error(bad_days, "expires after 1 to")
    assert_user_error(run_cli("keys", "revoke", "nope", env_dir=tmp_path), "There is no API key")
    missing = run_cli("keys", env_dir=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_serve_on_a_port_in_use_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("serve", "--host", "127.0.0.1", "--port", port, env_dir=tmp_path)
    assert_user_error(proc, f"Port {port} is in use")
