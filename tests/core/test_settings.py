"""core.settings: the one reader of environment variables, and what a job's process is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import settings
from core.util.errors import UserError


def test_every_field_has_its_variable_and_the_defaults_stand_alone():
    fields = set(settings.Settings.__dataclass_fields__)
    assert set(settings.VARIABLES) == fields
    s = settings.from_env({})
    assert s == settings.Settings() and s.max_jobs == 1 and s.warm_worker and s.db_path == Path("work/workspace.db")


def test_values_are_read_typed_and_a_misspelt_number_falls_back_to_its_default():
    s = settings.from_env({"CLASSIFIER_MAX_JOBS": "3", "CLASSIFIER_HEARTBEAT_SECONDS": "soon",
                           "CLASSIFIER_ADMINS": " a@x.org, ,b@x.org ", "CLASSIFIER_WARM_WORKER": "0",
                           "CLASSIFIER_MAX_PIXELS": "-5"})  # fmt: skip
    assert s.max_jobs == 3 and s.heartbeat_seconds == 60.0 and s.admins == ("a@x.org", "b@x.org")
    assert not s.warm_worker and s.max_pixels == 1


def test_a_megabyte_setting_that_is_no_number_is_a_sentence_where_it_is_used():
    s = settings.from_env({"CLASSIFIER_QUOTA_MB": "lots"})
    assert s.megabytes("datasets_mb") == 20 * 1024**3
    with pytest.raises(UserError, match=r"^CLASSIFIER_QUOTA_MB must be a positive number of megabytes"):
        s.megabytes("quota_mb")


def test_current_is_built_once_per_environment(monkeypatch):
    monkeypatch.setenv("CLASSIFIER_MAX_JOBS", "2")
    first = settings.current()
    assert settings.current() is first and first.max_jobs == 2
    monkeypatch.setenv("CLASSIFIER_MAX_JOBS", "4")
    assert settings.current().max_jobs == 4


def test_a_job_is_given_the_same_folders_as_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLASSIFIER_RUNS_DIR", "my-runs")
    monkeypatch.delenv("CLASSIFIER_DB", raising=False)
    env = settings.worker_env()
    assert env["CLASSIFIER_RUNS_DIR"] == str(tmp_path / "my-runs")
    assert "CLASSIFIER_DB" not in env  # the worker finds workspace.db in the same work folder
    assert str(settings.ROOT) in env["PYTHONPATH"].split(":")
    assert settings.from_env(env).runs_dir.resolve() == (tmp_path / "my-runs")
