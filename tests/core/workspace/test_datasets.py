"""core.workspace.datasets: zips kept once on the server, keyed by content, shared, guarded, and rebuilt from their
folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import class_entries, make_zip

import core.data.dataset
import core.workspace.datasets
from core import settings
from core.data.dataset import load_dataset
from core.data.sample import make_sample_zip
from core.util.errors import UserError
from core.workspace import datasets, db, records, space
from core.workspace import folders as workspace
from core.workspace.access import NotAllowed
from core.workspace.runs import MARKER, RUN_FORMAT, read_run, runs_dir, write_json


@pytest.fixture
def colour_zip(tmp_path):
    return make_zip(tmp_path / "colours.zip", class_entries(classes=("red", "green", "blue"), per_class=5))


def other_zip(tmp_path, name: str, per_class: int = 5):
    """A zip whose content differs from every other one made here (the per-class count and the file name)."""
    entries = {f"{k}{name}": v for k, v in class_entries(per_class=per_class).items()}
    return make_zip(tmp_path / f"{name}.zip", entries)


def folders() -> list[str]:
    root = records.datasets_dir()
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def rows() -> list[dict]:
    with db.connect() as con:
        return [dict(r) for r in con.execute("SELECT * FROM datasets ORDER BY id")]


def queue_job(dataset_id: str, state: str = "queued", job_id: str = "job-1") -> None:
    with db.connect(write=True) as con:
        con.execute(
            "INSERT OR REPLACE INTO jobs (id, kind, state, owner, dataset_id, params, created) "
            "VALUES (?, 'train', ?, '', ?, '{}', ?)",
            (job_id, state, dataset_id, time.time()),
        )


def fake_run(name: str, dataset_id: str):
    """A run folder as training leaves it, as far as listing goes: the marker names the dataset."""
    path = runs_dir() / name
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"")
    write_json(path / "classes.json", ["blue", "red"])
    write_json(path / "config.json", {})
    write_json(path / MARKER, {"format": RUN_FORMAT, "status": "completed", "dataset_id": dataset_id})
    return path


def lose_database() -> None:
    for suffix in ("", "-wal", "-shm"):
        db.db_path().with_name(settings.DB_FILE_NAME + suffix).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- saving


def test_a_zip_is_saved_once_under_its_content_id(colour_zip, work_dir):
    saved = datasets.save_zip(colour_zip, owner="a@x.org")
    assert saved.id == hashlib.sha256(colour_zip.read_bytes()).hexdigest()[:16]
    assert (saved.name, saved.source, saved.classes, saved.images, saved.added_by) == (
        "colours.zip", "colours.zip", 3, 15, "a@x.org",
    )  # fmt: skip
    folder = work_dir / "datasets" / saved.id
    assert folder.is_dir() and (folder / "files").is_dir()
    # The extracted files and the dataset's description (its small record.json aside).
    assert saved.bytes == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name != "record.json")
    assert folders() == [saved.id]  # no staging folder left behind
    assert [r["id"] for r in rows()] == [saved.id]


def test_the_same_zip_again_is_the_same_dataset_without_extracting_it(colour_zip, tmp_path, monkeypatch):
    first = datasets.save_zip(colour_zip, owner="a@x.org")
    copy = tmp_path / "elsewhere" / "renamed.zip"
    copy.parent.mkdir()
    shutil.copy(colour_zip, copy)

    def no_extraction(*args, **kwargs):
        raise AssertionError("a zip saved before was extracted again")

    monkeypatch.setattr(core.workspace.datasets, "load_dataset", no_extraction)
    calls = []
    again = datasets.save_zip(copy, name="Another name", owner="b@x.org", progress=lambda d, t: calls.append(d))
    assert again.id == first.id
    assert (again.name, again.added_by, again.added) == (first.name, first.added_by, first.added)  # the first's
    assert again.last_used >= first.last_used
    assert calls == []
    assert folders() == [first.id] and len(rows()) == 1


def test_two_sessions_saving_the_same_zip_at_once_make_one_dataset(colour_zip, monkeypatch):
    both_extracting = threading.Barrier(2)
    real = core.workspace.datasets.load_dataset

    def together(*args, **kwargs):
        both_extracting.wait(timeout=120)  # neither found the other's dataset: both extract
        return real(*args, **kwargs)

    monkeypatch.setattr(core.workspace.datasets, "load_dataset", together)
    results, errors = [], []

    def save(owner):
        try:
            results.append(datasets.save_zip(colour_zip, owner=owner))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(f"{n}@x.org",)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.id for r in results}) == 1
    assert len({r.added_by for r in results}) == 1  # both got the one that won, not their own
    assert folders() == [results[0].id]
    assert len(rows()) == 1
    assert datasets.open_dataset(results[0].id).report.total == 15


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ({**class_entries(per_class=3), "../evil.txt": b"escaped"}, "outside its folder"),
        (class_entries(classes=("red",), per_class=4), "at least 2 classes"),
    ],
)
def test_a_zip_that_cannot_be_used_leaves_no_folder_and_no_row(tmp_path, entries, needle, work_dir):
    bad = make_zip(tmp_path / "bad.zip", entries)
    with pytest.raises(UserError, match=needle):
        datasets.save_zip(bad)
    assert folders() == []
    assert rows() == []
    assert not (work_dir / "evil.txt").exists() and not list(work_dir.rglob("evil.txt"))


def test_a_file_that_is_not_a_zip_leaves_nothing(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("not a zip")
    with pytest.raises(UserError, match="not a zip file"):
        datasets.save_zip(fake)
    with pytest.raises(UserError, match="does not exist"):
        datasets.save_zip(tmp_path / "missing.zip")
    assert folders() == [] and rows() == []


def test_the_sample_zip_is_the_same_bytes_every_time_so_one_dataset(tmp_path):
    a = make_sample_zip(tmp_path / "a" / "sample.zip", per_class=3)
    os.utime(a, (0, 0))
    b = make_sample_zip(tmp_path / "b" / "sample.zip", per_class=3)
    assert a.read_bytes() == b.read_bytes()
    assert datasets.save_zip(a).id == datasets.save_zip(b).id
    assert len(records.list_datasets()) == 1


# ---------------------------------------------------------------------------------------------- opening


def test_opening_a_saved_dataset_reads_its_record_and_decodes_no_image(colour_zip, tmp_path, monkeypatch):
    saved = datasets.save_zip(colour_zip)
    fresh = load_dataset(colour_zip, tmp_path / "fresh")

    def no_scan(*args, **kwargs):
        raise AssertionError("the saved dataset was scanned again")

    monkeypatch.setattr(core.data.dataset, "scan_folder", no_scan)
    monkeypatch.setattr(core.data.dataset, "_check_image", no_scan)
    ds = datasets.open_dataset(saved.id)
    assert (ds.id, ds.name, ds.title) == (saved.id, "colours.zip", "colours.zip")
    assert ds.classes == fresh.classes
    assert [(it.path, it.label, it.split) for it in ds.items] == [(it.path, it.label, it.split) for it in fresh.items]
    assert ds.report.to_dict() == fresh.report.to_dict()
    assert all(p.is_file() for p in ds.paths())
    assert ds.root.is_absolute() and ds.root.is_relative_to(records.datasets_dir().resolve() / saved.id)
    # Stored relative to the dataset's folder: the workspace may move.
    assert json.loads((records.datasets_dir() / saved.id / "dataset.json").read_text())["root"] == "files"


def test_opening_marks_the_dataset_used(colour_zip, tmp_path):
    a = datasets.save_zip(colour_zip)
    b = datasets.save_zip(other_zip(tmp_path, "b"))
    assert [s.id for s in records.list_datasets()] == [b.id, a.id]  # most recently used first
    datasets.open_dataset(a.id)
    assert [s.id for s in records.list_datasets()] == [a.id, b.id]


def test_unknown_and_path_like_ids_never_reach_the_file_system(colour_zip, work_dir):
    datasets.save_zip(colour_zip)
    # A folder that looks like a dataset, outside the datasets folder: no id may lead there.
    outside = work_dir / "secret"
    outside.mkdir()
    shutil.copytree(records.datasets_dir() / records.list_datasets()[0].id, outside, dirs_exist_ok=True)
    for wanted in ("0123456789abcdef", "../secret", "../../etc", "..", "", "0123456789ABCDEF", "/etc/passwd"):
        with pytest.raises(records.UnknownDataset, match=r"There is no saved dataset .* on this server"):
            datasets.open_dataset(wanted)
        assert records.get(wanted) is None
        assert not records.exists(wanted)
    with pytest.raises(records.UnknownDataset):
        datasets.delete("../secret", "")
    assert (outside / "dataset.json").is_file()


# ---------------------------------------------------------------------------------------------- rename, delete


def test_rename_and_delete_are_for_the_owner_and_admins(colour_zip, monkeypatch):
    saved = datasets.save_zip(colour_zip, owner="b@x.org")
    with pytest.raises(NotAllowed, match=r"Only b@x.org or an admin may rename the dataset colours.zip"):
        datasets.rename(saved.id, "Mine now", "a@x.org")
    with pytest.raises(NotAllowed, match=r"may delete the dataset colours\.zip; you are signed in as a@x\.org"):
        datasets.delete(saved.id, "a@x.org")
    with pytest.raises(NotAllowed, match="you are not signed in"):
        datasets.delete(saved.id, "")
    assert records.get(saved.id).name == "colours.zip"

    assert datasets.rename(saved.id, "  Colour   swatches ", "B@x.org").name == "Colour swatches"  # the owner
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@x.org, other@x.org")
    assert datasets.rename(saved.id, "Swatches", "boss@x.org").name == "Swatches"
    assert datasets.delete(saved.id, "boss@x.org").name == "Swatches"
    assert records.get(saved.id) is None and folders() == [] and rows() == []


def test_what_a_guest_saved_is_everyones(colour_zip):
    saved = datasets.save_zip(colour_zip)  # no sign-in
    assert saved.added_by == ""
    assert datasets.rename(saved.id, "Ours", "a@x.org").name == "Ours"
    datasets.delete(saved.id, "c@x.org")
    assert records.list_datasets() == []


def test_a_name_must_be_given(colour_zip):
    saved = datasets.save_zip(colour_zip)
    with pytest.raises(UserError, match="needs a name"):
        datasets.rename(saved.id, "   ", "")
    with pytest.raises(UserError, match="at most 100 characters"):
        datasets.rename(saved.id, "x" * 101, "")
    assert records.get(saved.id).name == "colours.zip"


def test_delete_is_refused_while_a_queued_or_running_job_uses_the_dataset(colour_zip):
    saved = datasets.save_zip(colour_zip)
    for state in ("queued", "running"):
        queue_job(saved.id, state)
        with pytest.raises(records.Busy, match=r"A queued or running job uses the dataset colours\.zip"):
            datasets.delete(saved.id, "", force=True)
        assert records.exists(saved.id)
    queue_job(saved.id, "completed")
    datasets.delete(saved.id, "")
    assert not records.exists(saved.id)


def test_delete_says_what_runs_lose_and_needs_force(colour_zip):
    saved = datasets.save_zip(colour_zip)
    run = fake_run("20240101-000000-colours-abcd", saved.id)
    fake_run("20240101-000000-other-abcd", "ffffffffffffffff")
    assert read_run(run).dataset_id == saved.id
    assert records.runs_using(saved.id) == [run.name]

    with pytest.raises(datasets.InUse) as refused:
        datasets.delete(saved.id, "")
    sentence = str(refused.value)
    assert sentence.startswith("1 saved run was trained on the dataset colours.zip: it keeps working for Classify")
    assert "the zip uploaded again" in sentence
    assert refused.value.runs == [run.name]
    assert datasets.deletion_warning(saved.id) == sentence
    assert records.exists(saved.id)

    datasets.delete(saved.id, "", force=True)
    assert not records.exists(saved.id) and rows() == []
    assert run.is_dir()  # the run itself stays


# ---------------------------------------------------------------------------------------------- disk budget


def test_the_budget_removes_the_least_recently_used_but_not_one_a_job_uses(tmp_path, monkeypatch):
    a, b, c = (datasets.save_zip(other_zip(tmp_path, n)) for n in "abc")
    with db.connect(write=True) as con:  # a used longest ago, then b, then c
        for n, s in enumerate((a, b, c)):
            con.execute("UPDATE datasets SET last_used = ? WHERE id = ?", (1000.0 + n, s.id))
    queue_job(a.id)
    biggest = max(s.bytes for s in (a, b, c))
    # Room for a, c and the new one, not for b as well.
    monkeypatch.setenv("CLASSIFIER_DATASETS_MB", str((a.bytes + c.bytes + 1.1 * biggest) / 1024**2))
    d = datasets.save_zip(other_zip(tmp_path, "d"))
    assert d.removed == ("b.zip",)
    assert sorted(s.id for s in records.list_datasets()) == sorted([a.id, c.id, d.id])
    assert sorted(folders()) == sorted([a.id, c.id, d.id])


def test_the_dataset_just_saved_is_never_removed_for_the_budget(tmp_path, monkeypatch):
    a = datasets.save_zip(other_zip(tmp_path, "a"))
    monkeypatch.setenv("CLASSIFIER_DATASETS_MB", str(1.5 * a.bytes / 1024**2))
    b_zip = other_zip(tmp_path, "b")
    b = datasets.save_zip(b_zip)
    assert b.removed == ("a.zip",)
    assert [s.id for s in records.list_datasets()] == [b.id]
    again = datasets.save_zip(b_zip)  # saved before: nothing to make room for
    assert again.removed == ()


def test_a_zip_larger_than_the_whole_budget_is_refused(colour_zip, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_DATASETS_MB", "0.001")
    with pytest.raises(UserError, match="CLASSIFIER_DATASETS_MB"):
        datasets.save_zip(colour_zip)
    assert folders() == [] and rows() == []
    monkeypatch.setenv("CLASSIFIER_DATASETS_MB", "lots")
    with pytest.raises(UserError, match="must be a positive number of megabytes"):
        datasets.save_zip(colour_zip)


ANN, BOB = "https://id.example.com|ann", "https://id.example.com|bob"


def padded_zip(tmp_path, name: str, pad_files: int = 60) -> Path:
    """Six tiny images and ``pad_files`` zero-filled 1 MiB non-images: 68 KB zipped, 60 MiB unpacked."""
    entries = {**class_entries(per_class=3), **{f"red/pad{i}.bin": bytes(1024**2) for i in range(pad_files)}}
    return make_zip(tmp_path / name, entries)


def test_files_that_are_not_images_are_never_stored(tmp_path):
    entries = {**class_entries(per_class=3), "red/notes.txt": b"x" * 5000, "blue/broken.jpg": b"\xff\xd8 no"}
    saved = datasets.save_zip(make_zip(tmp_path / "mixed.zip", entries))
    files = records.datasets_dir() / saved.id / records.FILES
    kept = sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file())
    assert kept == sorted(k for k in class_entries(per_class=3))
    report = datasets.open_dataset(saved.id).report
    assert {s["file"] for s in report.skipped} >= {"red/notes.txt", "blue/broken.jpg"}  # still listed, and why


def test_a_zip_of_small_zero_files_is_refused_as_a_bomb_before_extraction(tmp_path):
    with pytest.raises(UserError, match=r"expands more than 200 times .* it may be a zip bomb\.$"):
        datasets.save_zip(padded_zip(tmp_path, "pad.zip"))
    assert folders() == [] and rows() == []


def test_strangers_uploads_never_remove_a_signed_in_users_dataset(tmp_path, monkeypatch):
    """Finding 1 of the access review: anonymous uploads pushed a signed-in user's dataset out of the budget."""
    mine = datasets.save_zip(other_zip(tmp_path, "mine"), owner=ANN)
    guest = datasets.save_zip(other_zip(tmp_path, "guest"))
    with db.connect(write=True) as con:  # Ann's is the least recently used
        con.execute("UPDATE datasets SET last_used = 1 WHERE id = ?", (mine.id,))
    monkeypatch.setenv("CLASSIFIER_DATASETS_MB", str((mine.bytes + guest.bytes * 1.5) / 1024**2))
    plan = space.plan_save(other_zip(tmp_path, "new"), datasets.access.GUEST)
    assert [r.id for r in plan.removes] == [guest.id]  # said before anything is removed
    assert records.exists(guest.id)
    new = datasets.save_zip(other_zip(tmp_path, "new"))
    assert new.removed == ("guest.zip",) and records.exists(mine.id)
    # Bob, signed in, may push out the guest's, never Ann's: when that is not enough, he is refused in words.
    with pytest.raises(space.NoRoom, match=r"taken by other people's datasets and running jobs: ask an admin"):
        datasets.save_zip(other_zip(tmp_path, "bobs", per_class=10), owner=BOB)
    assert records.exists(mine.id) and records.exists(new.id)  # refused before anything was removed
    # Ann may: her own, the least recently used, goes first.
    hers = datasets.save_zip(other_zip(tmp_path, "hers", per_class=10), owner=ANN)
    assert hers.removed[0] == "mine.zip" and records.exists(hers.id)


def test_each_person_has_a_quota_checked_before_extraction(tmp_path, monkeypatch):
    first = datasets.save_zip(other_zip(tmp_path, "first"), owner=ANN)
    monkeypatch.setenv("CLASSIFIER_QUOTA_MB", str(first.bytes * 1.5 / 1024**2))
    with pytest.raises(space.NoRoom, match=r"your saved datasets take .* \(CLASSIFIER_QUOTA_MB\): delete datasets"):
        datasets.save_zip(other_zip(tmp_path, "second"), owner=ANN)
    assert sorted(folders()) == [first.id]  # nothing extracted, nothing removed
    assert datasets.save_zip(other_zip(tmp_path, "bobs"), owner=BOB).added_by == BOB  # Bob has his own
    with pytest.raises(space.NoRoom, match="the datasets saved without sign-in take"):
        datasets.save_zip(other_zip(tmp_path, "g1"))  # guests share one quota...
        datasets.save_zip(other_zip(tmp_path, "g2"))
    monkeypatch.setenv("CLASSIFIER_QUOTA_MB", "0")
    with pytest.raises(UserError, match="CLASSIFIER_QUOTA_MB must be a positive number of megabytes"):
        datasets.save_zip(other_zip(tmp_path, "g3"))


# ---------------------------------------------------------------------------------------------- the folders rule


def test_sync_rebuilds_the_rows_from_the_folders_after_the_database_is_lost(colour_zip, tmp_path):
    a = datasets.save_zip(colour_zip, owner="a@x.org")
    b = datasets.save_zip(other_zip(tmp_path, "b"))
    datasets.rename(a.id, "Colours", "a@x.org")
    lose_database()
    shutil.rmtree(records.datasets_dir() / b.id)
    assert rows() == []  # a new, empty database
    records.sync()
    assert [r["id"] for r in rows()] == [a.id]
    (found,) = records.list_datasets()
    assert (found.id, found.name, found.added_by, found.images, found.bytes) == (
        a.id, "Colours", "a@x.org", 15, a.bytes,
    )  # fmt: skip
    assert datasets.open_dataset(a.id).name == "Colours"


def test_listing_notices_folders_and_rows_that_disagree(colour_zip, tmp_path):
    a = datasets.save_zip(colour_zip)
    b = datasets.save_zip(other_zip(tmp_path, "b"))
    shutil.rmtree(records.datasets_dir() / b.id)  # removed by hand
    assert [s.id for s in records.list_datasets()] == [a.id]
    assert records.get(b.id) is None
    lose_database()
    assert [s.id for s in records.list_datasets()] == [a.id]  # no explicit sync needed


def test_pruning_session_folders_leaves_saved_datasets(colour_zip, work_dir):
    saved = datasets.save_zip(colour_zip)
    session = workspace.session_dir("abc123")
    long_ago = time.time() - 2 * workspace.MAX_AGE
    for path in (records.datasets_dir(), session):
        os.utime(path, (long_ago, long_ago))
    workspace.prune()
    assert not session.exists()
    assert datasets.open_dataset(saved.id).report.total == 15


def test_pruning_removes_only_the_session_folders_it_made(work_dir):
    """A runs folder (or anything else) a user puts inside the work folder is never cleaned up, however old."""
    long_ago = time.time() - 2 * workspace.MAX_AGE
    mine = work_dir / "runs"
    (mine / "20200101-000000-ants-abcd").mkdir(parents=True)
    (mine / "20200101-000000-ants-abcd" / "model.keras").write_bytes(b"weights")
    look_alike = work_dir / "abc999"  # named like a session, but not made by one
    look_alike.mkdir()
    (work_dir / "notes.txt").write_text("keep me")
    fresh = workspace.session_dir("fresh1")
    old = workspace.session_dir("old1")
    for path in (mine, look_alike, old, work_dir / "notes.txt"):
        os.utime(path, (long_ago, long_ago))
    workspace.prune()
    assert not old.exists() and fresh.is_dir()
    assert (mine / "20200101-000000-ants-abcd" / "model.keras").read_bytes() == b"weights"
    assert look_alike.is_dir() and (work_dir / "notes.txt").read_text() == "keep me"
