"""core.workspace.versions: a saved dataset's immutable versions, their changes, their diffs and their split."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from conftest import COLORS, class_entries, jpeg_bytes, make_zip

from core.config import TrainConfig
from core.data.dataset import split_dataset
from core.util.errors import UserError
from core.workspace import datasets, manifests, records, versions
from core.workspace.access import NotAllowed


@pytest.fixture
def saved(tmp_path):
    """A saved real zip: red and blue, 10 images each, class folders at the top (a guest's)."""
    zip_path = make_zip(tmp_path / "colours.zip", class_entries(per_class=10))
    return datasets.save_zip(zip_path)


def new_image(seed: int, colour: str = "green") -> bytes:
    return jpeg_bytes(COLORS[colour], (40, 30), seed=1000 + seed)


def folder_files(saved) -> dict[str, bytes]:
    folder = records.datasets_dir() / saved.id
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".lock")  # a lock is no data
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def test_version_1_is_the_saved_zip_hashed_once(saved):
    [v1] = versions.versions(saved.id)
    assert (v1.number, v1.parent, v1.author) == (1, None, "")
    assert v1.message == "Saved from colours.zip"
    assert v1.classes == ["blue", "red"] and v1.counts == {"blue": 10, "red": 10}
    root = records.datasets_dir() / saved.id / records.FILES
    for e in v1.entries:
        assert e.hash == hashlib.sha256((root / e.path).read_bytes()).hexdigest()
        assert e.split == "" and e.path == f"{e.label}/{e.path.split('/')[1]}"
    assert versions.get(saved.id) == versions.newest(saved.id) == versions.get(saved.id, 1) == v1
    ds = datasets.open_dataset(saved.id)
    assert ds.version == 1 and all(it.digest for it in ds.items)
    assert {it.digest for it in ds.items} == v1.hashes


def test_a_dataset_saved_before_versions_gets_version_1_on_first_use_once_under_concurrency(saved):
    folder = records.datasets_dir() / saved.id
    for p in (folder / manifests.VERSIONS).iterdir():
        p.unlink()
    (folder / manifests.VERSIONS).rmdir()
    found, errors = [], []

    def first():
        try:
            found.append(versions.versions(saved.id))
        except Exception as exc:  # pragma: no cover - shown in the assertion
            errors.append(exc)

    threads = [threading.Thread(target=first) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(found) == 4
    assert all(len(f) == 1 and f[0] == found[0][0] for f in found)
    assert sorted(p.name for p in (folder / manifests.VERSIONS).iterdir()) == ["1.json"]


def test_commits_make_new_versions_and_never_change_old_ones(saved):
    v1 = versions.get(saved.id, 1)
    v1_file = (records.datasets_dir() / saved.id / "versions" / "1.json").read_bytes()
    red = [e for e in v1.entries if e.label == "red"]
    blue = [e for e in v1.entries if e.label == "blue"]

    v2 = versions.commit(saved.id, "", "two green ones", add=[(new_image(1), "g1.jpg", "green"),
                                                              (new_image(2), "g2.png", "green")])  # fmt: skip
    assert (v2.number, v2.parent, v2.message) == (2, 1, "two green ones")
    assert v2.counts == {"blue": 10, "green": 2, "red": 10}
    added = [e for e in v2.entries if e.label == "green"]
    assert all(e.path.startswith(".added/") and e.split == "" for e in added)
    root = records.datasets_dir() / saved.id / records.FILES
    assert all(hashlib.sha256((root / e.path).read_bytes()).hexdigest() == e.hash for e in added)

    v3 = versions.commit(saved.id, "ann@x.org", "", remove=[red[0].hash], relabel={blue[0].hash: "red"})
    assert v3.counts == {"blue": 9, "green": 2, "red": 10} and v3.author == "ann@x.org"
    assert v3.message == "1 removed (red 1), 1 relabelled (blue → red 1)"  # an empty message is written for it

    # An image already in the version is relabelled, not duplicated.
    v4 = versions.commit(saved.id, "", "green after all", add=[(new_image(1), "again.jpg", "blue")])
    assert len(v4.entries) == len(v3.entries) and v4.counts["green"] == 1

    assert [v.number for v in versions.versions(saved.id)] == [1, 2, 3, 4]
    assert (records.datasets_dir() / saved.id / "versions" / "1.json").read_bytes() == v1_file
    assert versions.get(saved.id, 1) == v1
    assert datasets.open_dataset(saved.id, version=1).version == 1
    ds = datasets.open_dataset(saved.id, version=3)
    assert ds.version == 3 and ds.classes == ["blue", "red", "green"] and len(ds.items) == 21  # saved order first
    assert ds.report.counts["green"] == {"all": 2} and ds.report.classes == ds.classes
    assert "Class 'green' has only 2 images; results for it will be unreliable." in ds.report.warnings
    ds = datasets.open_dataset(saved.id)  # the newest: one green image is too few to train, and is left out
    assert ds.version == 4 and ds.classes == ["blue", "red"] and len(ds.items) == 20
    assert "Class 'green' has only 1 usable image in version 4 and was left out" in ds.report.warnings[0]
    assert records.get(saved.id).images == 21 and records.get(saved.id).classes == 3


def test_a_removed_image_added_again_gets_its_file_and_split_back(saved):
    e = versions.get(saved.id, 1).entries[0]
    data = (records.datasets_dir() / saved.id / records.FILES / e.path).read_bytes()
    versions.commit(saved.id, "", "out", remove=[e.hash])
    back = versions.commit(saved.id, "", "back", add=[(data, "x.jpg", e.label)])
    assert back.entries[-1] == e
    assert versions.diff(saved.id, 1, 3).empty
    assert not (records.datasets_dir() / saved.id / records.FILES / ".added").exists()


def test_diff_per_class_and_in_words(saved):
    v1 = versions.get(saved.id, 1)
    red = [e for e in v1.entries if e.label == "red"]
    versions.commit(saved.id, "", "change", add=[(new_image(1), "g.jpg", "green"), (new_image(2), "h.jpg", "green")],
                    remove=[red[0].hash], relabel={red[1].hash: "blue", red[2].hash: "blue"})  # fmt: skip
    d = versions.diff(saved.id, 1, 2)
    assert (len(d.added), len(d.removed), len(d.relabelled)) == (2, 1, 2)
    assert d.relabelled[0][0].label == "red" and d.relabelled[0][1].label == "blue"
    assert d.per_class() == {
        "blue": {"added": 0, "removed": 0, "relabelled_in": 2, "relabelled_out": 0},
        "green": {"added": 2, "removed": 0, "relabelled_in": 0, "relabelled_out": 0},
        "red": {"added": 0, "removed": 1, "relabelled_in": 0, "relabelled_out": 2},
    }
    assert d.summary() == "v1 → v2: 2 added (green 2), 1 removed (red 1), 2 relabelled (red → blue 2)"
    back = versions.diff(saved.id, 2, 1)
    assert (len(back.added), len(back.removed)) == (1, 2)
    assert versions.diff(saved.id, 1, 1).summary() == "v1 → v1: no change"


def test_an_image_keeps_its_split_across_versions(saved):
    config = TrainConfig(validation_split=0.3)

    def split_of(version):
        ds = datasets.open_dataset(saved.id, version=version)
        train, val = split_dataset(ds, config)
        assert train and val and not set(train) & set(val)
        for label in range(len(ds.classes)):  # every class is trained and checked
            assert any(ds.items[i].label == label for i in val) and any(ds.items[i].label == label for i in train)
        return {ds.items[i].digest for i in train}, {ds.items[i].digest for i in val}

    train1, val1 = split_of(1)
    adds = [(new_image(i, "green" if i % 2 else "red"), f"n{i}.jpg", "green" if i % 2 else "red") for i in range(12)]
    versions.commit(saved.id, "", "more", add=adds)
    train2, val2 = split_of(2)
    assert train1 <= train2 and val1 <= val2  # nothing changed sides; only new images were placed
    assert versions.new_validation(saved.id, 1, 2, 0.3) == len(val2 - val1) > 0
    assert versions.new_validation(saved.id, 1, 1, 0.3) == 0
    # The same images at another seed: the same split (the hash decides, not the shuffle).
    assert split_of(2) == (train2, val2)
    ds = datasets.open_dataset(saved.id, version=2)
    assert split_dataset(ds, TrainConfig(validation_split=0.3, seed=7)) == split_dataset(ds, config)


def test_a_zips_own_split_is_kept_and_added_images_split_by_hash(tmp_path):
    entries = {**class_entries("train/", per_class=6), **class_entries("val/", per_class=2)}
    entries = {k: v if not k.startswith("val/") else jpeg_bytes(COLORS[k.split("/")[1]], seed=hash(k) % 999)
               for k, v in entries.items()}  # fmt: skip
    saved = datasets.save_zip(make_zip(tmp_path / "split.zip", entries))
    v1 = versions.get(saved.id)
    assert {e.split for e in v1.entries} == {"train", "val"}
    versions.commit(saved.id, "", "more", add=[(new_image(i, "red"), f"r{i}.jpg", "red") for i in range(20)])
    ds = datasets.open_dataset(saved.id)
    train, val = split_dataset(ds, TrainConfig(validation_split=0.5))
    vals = {ds.items[i].path for i in val}
    assert {e.path for e in v1.entries if e.split == "val"} <= vals
    assert 0 < len(vals) - 4 < 20 and len(train) + len(val) == len(ds.items)


def test_two_commits_at_once_both_land(saved):
    errors = []

    def add(i):
        try:
            versions.commit(saved.id, "", f"add {i}", add=[(new_image(i), f"{i}.jpg", "green")])
        except Exception as exc:  # pragma: no cover - shown in the assertion
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    found = versions.versions(saved.id)
    assert [v.number for v in found] == [1, 2, 3, 4, 5]
    assert [v.parent for v in found] == [None, 1, 2, 3, 4]
    assert found[-1].counts["green"] == 4  # each built on the one before: nothing lost


def test_only_the_owner_or_an_admin_changes_a_signed_in_users_dataset(tmp_path, monkeypatch):
    saved = datasets.save_zip(make_zip(tmp_path / "c.zip", class_entries(per_class=4)), owner="b@x.org")
    before = folder_files(saved)
    with pytest.raises(NotAllowed, match=r"Only b@x.org or an admin may change the dataset c\.zip"):
        versions.commit(saved.id, "a@x.org", "mine", add=[(new_image(1), "g.jpg", "green")])
    with pytest.raises(NotAllowed, match="you are not signed in"):
        versions.commit(saved.id, "", "mine", add=[(new_image(1), "g.jpg", "green")])
    assert folder_files(saved) == before
    assert versions.commit(saved.id, "b@x.org", "the owner", add=[(new_image(1), "g.jpg", "green")]).number == 2
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@x.org")
    assert versions.commit(saved.id, "boss@x.org", "an admin", add=[(new_image(2), "h.jpg", "green")]).number == 3


def test_what_a_guest_saved_anyone_may_change(saved):
    assert versions.commit(saved.id, "a@x.org", "hi", add=[(new_image(1), "g.jpg", "green")]).author == "a@x.org"


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(add=[(b"not an image at all", "x.jpg", "green")]), "x.jpg is not a usable image"),
        (dict(add=[(b"", "x.jpg", "green")]), "x.jpg is empty"),
        (dict(add=[(jpeg_bytes()[:60], "cut.jpg", "green")]), "cut.jpg is not a usable image"),
        (dict(add=[(new_image(1), "../../x.jpg", "green")]), "is not a plain file name"),
        (dict(add=[(new_image(1), "a\\b.jpg", "green")]), "is not a plain file name"),
        (dict(add=[(new_image(1), "x.jpg", "")]), "A class needs a name"),
        (dict(add=[(new_image(1), "x.jpg", "   ")]), "A class needs a name"),
        (dict(add=[(new_image(1), "x.jpg", "../green")]), "cannot be used"),
        (dict(add=[(new_image(1), "x.jpg", "gre\u2028en")]), "contains"),
        (dict(relabel={"ab" * 32: "red"}), "has the content hash abababab"),
        (dict(remove=["nope"]), "has the content hash nope"),
        (dict(), "Nothing changed"),
    ],
)
def test_hostile_or_empty_changes_are_refused_in_words_and_write_nothing(saved, change, needle):
    versions.versions(saved.id)
    before = folder_files(saved)
    with pytest.raises(UserError, match=None) as caught:
        versions.commit(saved.id, "", "bad", **change)
    assert needle in str(caught.value) and str(caught.value).endswith(".")
    assert folder_files(saved) == before
    assert [v.number for v in versions.versions(saved.id)] == [1]


def test_a_change_that_leaves_too_few_classes_or_a_bad_message_is_refused(saved):
    blue = [e.hash for e in versions.get(saved.id).entries if e.label == "blue"]
    with pytest.raises(UserError, match="fewer than 2 classes of 2 or more images"):
        versions.commit(saved.id, "", "no more blue", remove=blue[1:])
    with pytest.raises(UserError, match=r"The message .* reorders or hides text"):
        versions.commit(saved.id, "", "evil\u202etxt.exe", remove=blue[:1])
    assert versions.commit(saved.id, "", "two\nlines", remove=blue[:1]).message == "two lines"  # one line
    with pytest.raises(UserError, match="at most 200 characters"):
        versions.commit(saved.id, "", "x" * 201, remove=blue[:1])
    assert len(versions.versions(saved.id)) == 2


@pytest.mark.parametrize("number", [9, 0, -1, "2", True, None])
def test_an_unknown_version_is_a_sentence(saved, number):
    if number is None:
        assert versions.get(saved.id, None).number == 1
        return
    with pytest.raises(versions.UnknownVersion, match=r"has no version .*; it has only version 1\."):
        versions.get(saved.id, number)
    with pytest.raises(versions.UnknownVersion):
        datasets.open_dataset(saved.id, version=number)


def test_an_unknown_dataset_and_a_damaged_manifest_are_sentences(saved):
    with pytest.raises(records.UnknownDataset):
        versions.versions("0123456789abcdef")
    with pytest.raises(records.UnknownDataset):
        versions.commit("../../etc", "", "x", remove=["a"])
    path = records.datasets_dir() / saved.id / "versions" / "1.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(UserError, match=r"Version 1 of the saved dataset .* is damaged"):
        versions.get(saved.id, 1)


@pytest.mark.parametrize("text, number", [("latest", None), ("newest", None), ("3", 3), ("v2", 2), ("V2", 2)])
def test_version_names_are_parsed(text, number):
    assert versions.parse_version(text) == number


@pytest.mark.parametrize("text", ["0", "-1", "x", "", "1.5", "\u00b3", "v", "9" * 30])
def test_bad_version_names_are_sentences(text):
    with pytest.raises(versions.UnknownVersion, match="is not a version"):
        versions.parse_version(text)
