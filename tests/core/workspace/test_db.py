"""core.workspace.db: where the workspace database lives."""

from __future__ import annotations

import os

from core.settings import DB_FILE_NAME, worker_env
from core.workspace import db
from core.workspace.folders import work_root


def test_the_database_can_live_apart_from_the_work_folder(tmp_path, monkeypatch):
    local = tmp_path / "local-disk" / "workspace.db"
    local.parent.mkdir()
    monkeypatch.setenv("CLASSIFIER_DB", str(local))
    with db.connect(write=True) as con:
        con.execute("SELECT 1")
    assert db.db_path() == local.resolve() and local.is_file()
    assert not (work_root() / DB_FILE_NAME).exists()
    assert worker_env()["CLASSIFIER_DB"] == str(local.resolve())  # a job's process opens the same file


def test_by_default_it_sits_in_the_work_folder(monkeypatch):
    monkeypatch.delenv("CLASSIFIER_DB", raising=False)
    assert db.db_path() == work_root() / DB_FILE_NAME
    assert os.path.dirname(db.db_path()) == str(work_root())
