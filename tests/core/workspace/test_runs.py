"""Run folders: only marked folders are runs; listing, checking, deleting (with their job's rows) and claiming
folders."""

from __future__ import annotations

import json
import re

import pytest

from core.util.errors import UserError
from core.workspace import runs


def make_run(folder, finished="2024-01-01T10:00:00", status="completed", model=True, **extra):
    folder.mkdir(parents=True)
    if model:
        (folder / "model.keras").write_bytes(b"PK fake model")
    runs.write_json(folder / "classes.json", ["a", "b"])
    runs.write_json(folder / "config.json", {"image_size": 32})
    marker = {"format": runs.RUN_FORMAT, "version": runs.RUN_VERSION, "status": status, "finished": finished}
    runs.write_json(folder / runs.MARKER, {**marker, **extra})
    return folder


def test_runs_dir_follows_the_environment(isolated_dirs, monkeypatch):
    assert runs.runs_dir() == isolated_dirs / "runs"
    monkeypatch.delenv("CLASSIFIER_RUNS_DIR")
    assert str(runs.runs_dir()) == "runs"


def test_list_runs_lists_only_marked_folders_newest_first(tmp_path):
    make_run(tmp_path / "old", finished="2024-01-01T10:00:00")
    make_run(tmp_path / "new", finished="2024-03-01T10:00:00", status="stopped")
    unmarked = tmp_path / "unmarked"
    unmarked.mkdir()
    (unmarked / "model.keras").write_bytes(b"PK not ours")
    foreign = make_run(tmp_path / "foreign")
    runs.write_json(foreign / runs.MARKER, {"format": "something-else"})
    garbage = make_run(tmp_path / "garbage")
    (garbage / runs.MARKER).write_text("{not json")
    listish = make_run(tmp_path / "listish")
    (listish / runs.MARKER).write_text("[1, 2]")
    make_run(tmp_path / "no-model", model=False)
    (tmp_path / "a-file.txt").write_text("x")

    listed = runs.list_runs(tmp_path)
    assert [r["id"] for r in listed] == ["new", "old"]
    assert listed[0]["status"] == "stopped" and listed[0]["path"] == str(tmp_path / "new")


def test_list_runs_defaults_to_the_runs_folder_and_copes_without_it(isolated_dirs):
    assert runs.list_runs() == []  # the folder does not exist yet
    make_run(isolated_dirs / "runs" / "r1")
    assert [r["id"] for r in runs.list_runs()] == ["r1"]


def test_check_run_accepts_a_run_and_refuses_everything_else(tmp_path):
    run = make_run(tmp_path / "run")
    assert runs.check_run(run) == run
    assert runs.check_run(str(run)) == run
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.keras").write_bytes(b"PK")
    with pytest.raises(UserError, match="not a run saved by this app"):
        runs.check_run(plain)
    with pytest.raises(UserError, match="not a folder"):
        runs.check_run(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        runs.check_run(tmp_path / "file")
    with pytest.raises(UserError, match=r"incomplete \(missing model.keras\)"):
        runs.check_run(make_run(tmp_path / "half", model=False))


def test_delete_run_removes_the_run(tmp_path):
    run = make_run(tmp_path / "run")
    keep = make_run(tmp_path / "keep")
    runs.delete_run(run)
    assert not run.exists()
    assert keep.is_dir() and [r["id"] for r in runs.list_runs(tmp_path)] == ["keep"]


def test_delete_run_removes_its_training_s_job_and_chart_points_and_nothing_else():
    from core.workspace import db

    run = make_run(runs.runs_dir() / "20260101-000000-colours-0001")
    with db.connect(write=True) as con:
        for job_id, finished in ((run.name, 2.0), ("20260101-000000-other-0002", 2.0), ("still-running", None)):
            con.execute("INSERT INTO jobs (id, kind, state, owner, params, created, finished) "
                        "VALUES (?, 'train', 'completed', '', '{}', 1.0, ?)", (job_id, finished))  # fmt: skip
            con.executemany("INSERT INTO job_points (job_id, kind, data) VALUES (?, 'batch', '{}')",
                            [(job_id,)] * 3)  # fmt: skip
    runs.delete_run(run)
    with db.connect() as con:
        jobs = {r["id"] for r in con.execute("SELECT id FROM jobs")}
        points = [r["job_id"] for r in con.execute("SELECT job_id FROM job_points")]
    assert jobs == {"20260101-000000-other-0002", "still-running"}
    assert sorted(points) == ["20260101-000000-other-0002"] * 3 + ["still-running"] * 3


def test_delete_run_refuses_folders_that_are_not_runs(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a run"):
        runs.delete_run(plain)
    assert (plain / "precious.txt").read_text() == "keep me"
    with pytest.raises(UserError):
        runs.delete_run(tmp_path / "missing")


def test_delete_run_removes_an_incomplete_run_too(tmp_path):
    # Listed (marker and model) but missing classes.json: it must not become an undeletable run.
    half = make_run(tmp_path / "half")
    (half / "classes.json").unlink()
    assert [r["id"] for r in runs.list_runs(tmp_path)] == ["half"]
    runs.delete_run(half)
    assert not half.exists()
    no_model = make_run(tmp_path / "no-model", model=False)
    runs.delete_run(no_model)
    assert not no_model.exists()


def test_claim_dir(tmp_path):
    fresh = runs.claim_dir(tmp_path / "a" / "b")
    assert fresh == tmp_path / "a" / "b" and fresh.is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runs.claim_dir(empty) == empty
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        runs.claim_dir(full)
    assert (full / "x.txt").read_text() == "x"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError):
        runs.claim_dir(tmp_path / "file")


def test_new_run_dir_makes_unique_safe_names(tmp_path):
    a = runs.new_run_dir("My photos (2024).zip", parent=tmp_path)
    b = runs.new_run_dir("My photos (2024).zip", parent=tmp_path)
    assert a != b and a.is_dir() and b.is_dir() and list(a.iterdir()) == []
    assert re.fullmatch(r"\d{8}-\d{6}-My-photos-2024-[0-9a-f]{4}", a.name)
    assert re.fullmatch(r"\d{8}-\d{6}-run-[0-9a-f]{4}", runs.new_run_dir("???", parent=tmp_path).name)


def test_write_json_round_trips_and_leaves_no_temporary_file(tmp_path):
    data = {"classes": ["café", "naïve"], "n": 3}
    runs.write_json(tmp_path / "x.json", data)
    assert runs.read_json(tmp_path / "x.json") == data
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == data
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_is_run(tmp_path):
    assert runs.is_run(make_run(tmp_path / "r"))
    assert not runs.is_run(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / runs.MARKER).write_bytes(b"\xff\xfe")
    assert not runs.is_run(tmp_path / "bad")


def test_history_reads_the_csv_log(tmp_path):
    run = make_run(tmp_path / "r")
    assert runs.history(run) == []
    (run / "history.csv").write_text("epoch,loss,val_loss\n0,1.5,1.6\n1,0.5,\n")
    assert runs.history(run) == [{"epoch": 0.0, "loss": 1.5, "val_loss": 1.6}, {"epoch": 1.0, "loss": 0.5}]


def test_export_zip_holds_the_runs_files(tmp_path):
    import io
    import zipfile

    run = make_run(tmp_path / "r")
    (run / "secret.txt").write_text("not exported")
    names = set(zipfile.ZipFile(io.BytesIO(runs.export_zip(run))).namelist())
    assert names == {"r/model.keras", "r/classes.json", "r/config.json", f"r/{runs.MARKER}"}
    with pytest.raises(UserError):
        runs.export_zip(tmp_path / "nothing")


def test_writers_of_one_json_file_at_once_never_clash_nor_leave_half_a_file(tmp_path):
    import threading

    from core.workspace.runs import read_json, write_json

    target = tmp_path / "evaluation.json"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                write_json(target, {"writer": n, "i": i, "pad": "x" * 20000})
                assert read_json(target)["pad"] == "x" * 20000  # whole, whoever wrote it
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert read_json(target)["i"] == 39
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation.json"]  # no temporary file left behind
