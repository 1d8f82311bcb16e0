"""core.db: where the workspace database lives."""

from __future__ import annotations

import os

from core import db
from core.jobs import worker_env


def test_the_database_can_live_apart_from_the_work_folder(tmp_path, monkeypatch):
    local = tmp_path / "local-disk" / "workspace.db"
    local.parent.mkdir()
    monkeypatch.setenv(db.DB_ENV, str(local))
    with db.connect(write=True) as con:
        con.execute("SELECT 1")
    assert db.db_path() == local.resolve() and local.is_file()
    assert not (db.work_root() / db.FILE_NAME).exists()
    assert worker_env()[db.DB_ENV] == str(local.resolve())  # a job's process opens the same file


def test_by_default_it_sits_in_the_work_folder(monkeypatch):
    monkeypatch.delenv(db.DB_ENV, raising=False)
    assert db.db_path() == db.work_root() / db.FILE_NAME
    assert os.path.dirname(db.db_path()) == str(db.work_root())
