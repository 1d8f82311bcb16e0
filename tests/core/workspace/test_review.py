"""core.workspace.review: a saved dataset's review queue, from an image sent to the model to the dataset's next
version: queueing (once per image, capped), the order a reviewer sees, labels and their undo, the commit, and who
may do what. Real images (conftest's photos) in a real saved zip."""

from __future__ import annotations

import pytest
from conftest import class_entries, encoded, jpeg_bytes, make_zip, photo

from core.util.errors import UserError
from core.workspace import access, datasets, records, review, versions
from core.workspace.access import NotAllowed

ISSUER = "https://id.example.com"


@pytest.fixture
def saved(tmp_path):
    """A saved real zip of red and blue images (a guest's: everyone may label it)."""
    return datasets.save_zip(make_zip(tmp_path / "colours.zip", class_entries(per_class=6)))


def image(seed: int) -> bytes:
    return encoded(photo(seed, (96, 72)), "JPEG", quality=90)


def queue_one(saved, seed: int, **more) -> review.Item:
    return review.enqueue(saved.id, image(seed), f"photo {seed}.jpg", source=more.pop("source", "classify"), **more)


def test_an_image_is_kept_once_with_what_the_model_said(saved):
    top = [("red", 0.6), ("blue", 0.3), ("green", 0.1)]
    it = review.enqueue(saved.id, image(1), "IMG_1.jpg", run_id="run-1", top=top, not_sure=True, source="api",
                        key_id="k-1")  # fmt: skip
    assert (it.state, it.source, it.key_id, it.run_id, it.name) == ("queued", "api", "k-1", "run-1", "IMG_1.jpg")
    assert it.top == top and it.not_sure and it.none_of_these is None and it.label is None
    assert it.margin == pytest.approx(0.3)
    assert review.image_bytes(it) == image(1)
    stored = list((records.datasets_dir() / saved.id / review.FOLDER).iterdir())
    assert [p.name for p in stored] == [f"{it.hash}.jpg"]
    # The same bytes again, from elsewhere and under another name: the same item, nothing stored twice.
    again = review.enqueue(saved.id, image(1), "copy.jpg", source="demo")
    assert again == it and len(list(stored[0].parent.iterdir())) == 1
    assert review.queue(saved.id) == [it] and review.progress(saved.id) == (0, 1)


def test_names_become_plain_file_names(saved):
    it = review.enqueue(saved.id, image(2), "../../etc/pass\u2028wd", source="classify")
    assert it.name == "pass_wd"
    assert review.enqueue(saved.id, image(3), "", source="classify").name == "image.jpg"


def test_the_queue_starts_with_what_a_label_would_teach_most(saved):
    sure = queue_one(saved, 1, top=[("red", 0.95), ("blue", 0.05)])
    close = queue_one(saved, 2, top=[("red", 0.51), ("blue", 0.49)])
    middle = queue_one(saved, 3, top=[("blue", 0.7), ("red", 0.3)])
    unsure = queue_one(saved, 4, top=[("red", 0.9), ("blue", 0.1)], not_sure=True)
    neither = queue_one(saved, 5, top=[("red", 0.99), ("blue", 0.01)], none_of_these=True)
    assert [it.id for it in review.queue(saved.id)] == [neither.id, unsure.id, close.id, middle.id, sure.id]


def test_a_full_queue_refuses_in_words_and_drops_nobodys_item(saved, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_REVIEW_CAP", "2")
    first, second = queue_one(saved, 1), queue_one(saved, 2)
    with pytest.raises(review.QueueFull, match=r"review queue of colours.zip is full \(2 images .*photo 3.jpg was not"):
        queue_one(saved, 3)
    assert {it.id for it in review.queue(saved.id)} == {first.id, second.id}
    assert queue_one(saved, 1) == first  # an image already queued is no new item: not refused
    review.decide(first.id, None, "")  # discarding frees a place
    assert queue_one(saved, 3).state == "queued"


@pytest.mark.parametrize("bad", [b"", b"not an image at all", jpeg_bytes()[:200]])
def test_what_is_not_an_image_is_refused_and_nothing_is_kept(saved, bad):
    with pytest.raises(UserError, match="not kept for review"):
        review.enqueue(saved.id, bad, "x.jpg", source="api")
    assert review.queue(saved.id, None) == []
    assert not (records.datasets_dir() / saved.id / review.FOLDER).exists()


def test_unknown_datasets_and_items_are_sentences(saved):
    with pytest.raises(records.UnknownDataset, match="no saved dataset 0123456789abcdef"):
        review.enqueue("0123456789abcdef", image(1), "a.jpg", source="api")
    with pytest.raises(records.UnknownDataset):
        review.queue("../../etc")
    with pytest.raises(UserError, match="There is no review item nope"):
        review.decide("nope", "red", "")
    with pytest.raises(UserError, match="There is no review item"):
        review.item("nope")


def test_decisions_undo_one_by_one_most_recent_first(saved):
    a, b = queue_one(saved, 1), queue_one(saved, 2)
    assert review.decide(a.id, "red", "").state == "labelled"
    assert review.decide(b.id, None, "").state == "discarded"
    assert review.decide(a.id, "blue", "").label == "blue"  # a change of mind
    assert review.progress(saved.id) == (2, 2) and review.queue(saved.id) == []
    assert review.undo(saved.id, "").label == "red"  # back to the first label
    assert review.undo(saved.id, "").state == "queued"  # b waits again
    assert review.undo(saved.id, "").id == a.id
    assert review.undo(saved.id, "") is None
    assert {it.id for it in review.queue(saved.id)} == {a.id, b.id} and review.progress(saved.id) == (0, 2)
    with pytest.raises(UserError, match="class needs a name"):
        review.decide(a.id, "  ", "")
    with pytest.raises(UserError, match="line break"):
        review.decide(a.id, "red\nblue", "")


def test_commit_makes_a_new_version_with_the_labelled_images(saved):
    before = versions.newest(saved.id)
    a, b, c = queue_one(saved, 1), queue_one(saved, 2), queue_one(saved, 3)
    up = review.enqueue(saved.id, image(4), "upload.jpg", source="upload", label="green")
    assert up.state == "labelled" and review.progress(saved.id) == (1, 4)
    review.decide(a.id, "red", "")
    review.decide(b.id, "green", "")  # a new class, with the upload's: 2 images
    review.decide(c.id, None, "")
    assert review.pending(saved.id) == (3, 0)
    v = review.commit(saved.id, "", "three reviewed photos")
    assert v.number == before.number + 1 and v.message == "three reviewed photos"
    labels = {e.hash: e.label for e in v.entries}
    assert labels[a.hash] == "red" and labels[b.hash] == "green" and labels[up.hash] == "green"
    assert c.hash not in labels and len(v.entries) == len(before.entries) + 3
    assert versions.newest(saved.id) == v
    ds = datasets.open_dataset(saved.id)
    assert "green" in ds.classes and {a.hash, b.hash, up.hash} <= {it.digest for it in ds.items}
    # Closed: committed ones leave the queue (their bytes are the dataset's now), nothing to undo, progress anew.
    states = {it.id: (it.state, it.version) for it in review.queue(saved.id, None)}
    assert states[a.id] == ("committed", v.number) and states[c.id] == ("discarded", v.number)
    assert review.progress(saved.id) == (0, 0) and review.undo(saved.id, "") is None
    assert list((records.datasets_dir() / saved.id / review.FOLDER).iterdir()) == []
    assert review.image_bytes(review.item(a.id)) == image(1)  # from the dataset's files
    with pytest.raises(UserError, match="already part of version 2"):
        review.decide(a.id, "blue", "")
    assert queue_one(saved, 3).state == "discarded"  # a discarded image sent again is not queued again


def test_the_first_commit_refuses_when_nothing_is_labelled(saved):
    review.decide(queue_one(saved, 1).id, None, "")
    with pytest.raises(UserError, match="Nothing is labelled"):
        review.commit(saved.id, "", "")
    assert versions.newest(saved.id).number == 1


@pytest.fixture
def people(monkeypatch):
    monkeypatch.setenv("CLASSIFIER_ADMINS", "boss@example.com")

    def sign_in(sub, email):
        return access.sign_in({"iss": ISSUER, "sub": sub, "email": email})

    return {"owner": sign_in("ann", "ann@example.com"), "other": sign_in("bob", "bob@example.com"),
            "admin": sign_in("boss", "boss@example.com")}  # fmt: skip


def test_only_who_may_change_the_dataset_labels_it_but_anyone_may_queue(tmp_path, people):
    owner, other, admin = people["owner"], people["other"], people["admin"]
    saved = datasets.save_zip(make_zip(tmp_path / "mine.zip", class_entries(per_class=4)), owner=owner)
    it = queue_one(saved, 1, user=other)  # whoever may classify with the run may queue
    assert it.added_by == other and not review.may_label(other, saved.id) and review.may_label(owner, saved.id)
    for refused in (lambda: review.decide(it.id, "red", other), lambda: review.undo(saved.id, other),
                    lambda: review.commit(saved.id, other, "mine now"),
                    lambda: review.enqueue(saved.id, image(2), "b.jpg", source="upload", user=other, label="red"),
                    lambda: review.decide(it.id, "red", access.GUEST)):  # fmt: skip
        with pytest.raises(NotAllowed, match=r"Only ann@example\.com or an admin may label the images"):
            refused()
    assert review.queue(saved.id) == [it]
    review.decide(it.id, "red", owner)
    assert review.undo(saved.id, admin) is None  # the owner's decision is theirs to undo
    review.decide(it.id, "blue", admin)
    assert review.undo(saved.id, admin).label == "red"
    assert review.commit(saved.id, owner, "").number == 2


def test_suspects_are_judged_undone_and_relabelled_by_the_next_commit(saved):
    from core.workspace import decisions, suspects

    found = [{"file": "red/0.jpg", "given": "red", "suggested": "blue", "confidence": 0.9},
             {"file": "blue/1.jpg", "given": "blue", "suggested": "red", "confidence": 0.8},
             {"file": "red/2.jpg", "given": "red", "suggested": "blue", "confidence": 0.7},
             {"file": "gone.jpg", "given": "red", "suggested": "blue", "confidence": 0.6}]  # fmt: skip
    a, b, c = listed = suspects.gather(saved.id, [(1, "run-1", found), (None, "run-2", found[:1])])
    assert [s.path for s in listed] == ["red/0.jpg", "blue/1.jpg", "red/2.jpg"]  # once each, known paths only
    assert all(s.state == "open" and s.run_id == "run-1" for s in listed)
    assert suspects.judge(saved.id, a, suspects.RELABEL, "", label=a.suggested).state == "relabel"
    assert suspects.judge(saved.id, b, suspects.EXCLUDE, "").state == "exclude"
    assert suspects.judge(saved.id, c, suspects.KEEP, "").state == "keep"
    assert decisions.decisions(saved.id)["blue/1.jpg"]["decision"] == "exclude"
    assert review.undo(saved.id, "").state == "queued"  # the keep, undone: decided nothing again
    assert "red/2.jpg" not in decisions.decisions(saved.id)
    states = {s.path: (s.state, s.label) for s in suspects.gather(saved.id, [(1, "run-1", found)])}
    assert states == {"red/0.jpg": ("relabel", "blue"), "blue/1.jpg": ("exclude", None), "red/2.jpg": ("open", None)}
    assert review.progress(saved.id) == (0, 0)  # suspects are not images waiting to be added
    assert review.pending(saved.id) == (0, 1)  # the one relabel (a keep changes nothing)
    v = review.commit(saved.id, "", "relabel one suspect")
    assert {e.hash: e.label for e in v.entries}[a.hash] == "blue" and v.counts == {"blue": 7, "red": 5}
    after = {s.path: (s.state, s.label, s.version) for s in suspects.gather(saved.id, [(1, "run-1", found)])}
    assert after["red/0.jpg"] == ("relabel", "blue", 2) and after["blue/1.jpg"][0] == "exclude"
    assert decisions.excluded(saved.id) == ["blue/1.jpg"]
