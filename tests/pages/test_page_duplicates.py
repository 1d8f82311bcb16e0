"""Duplicates on the pages, through AppTest: the Dataset page's section (counts, pairs side by side), its search as a
job when asked (one for two tabs asking together) with its progress and Stop, the report found again after a reload
or read from hashes on disk, and the Evaluate page's warning for a run whose validation images duplicate training
images.

The jobs run on threads of the test's process (tests/conftest.py) and do the real hashing of real images; a test that
must see a search half done holds its hashing until it has looked."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import encoded, make_zip, photo
from pagetest import assert_clean, button, open_app, texts

from core.data import duplicates, hashes
from core.jobs.kinds import DUPLICATES
from core.jobs.registry import registry
from core.jobs.states import CANCELLED, COMPLETED
from core.workspace import datasets
from core.workspace.runs import MARKER, RUN_FORMAT, RUN_VERSION, runs_dir, write_json
from ui import duplicates_views
from ui.duplicates_views import EXPANDER

SEARCHING = "Looking for exact and near duplicates, once for this version of the dataset"


def saved_with_duplicates(tmp_path: Path):
    """A saved split dataset: a leak (train/val), a photo in both classes, and different photos otherwise."""
    entries = {}
    for part, offset in (("train", 0), ("val", 1000)):
        for cls, base in (("cats", 200), ("dogs", 300)):
            for k in range(4):
                entries[f"{part}/{cls}/{k}.png"] = encoded(photo(base + offset + k))
    entries["val/cats/leaked.jpg"] = encoded(photo(201), "JPEG", quality=60)  # train/cats/1.png, recompressed
    entries["train/dogs/cat.png"] = encoded(photo(202))  # train/cats/2.png, labelled dog
    return datasets.open_dataset(datasets.save_zip(make_zip(tmp_path / "pets.zip", entries)).id)


def section(at):
    (found,) = [e for e in at.expander if e.label.startswith(EXPANDER)]
    return found


def searches(ds) -> list:
    return [j for j in registry().jobs(recent=None) if j.kind == DUPLICATES and j.dataset_id == ds.id]


@pytest.fixture
def held(monkeypatch):
    """The hashing waits for this event (set it to let the search go on); set when the test ends."""
    hold = threading.Event()
    real = hashes.hash_images

    def hash_images(*args, **kwargs):
        hold.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashes, "hash_images", hash_images)
    yield hold
    hold.set()


def assert_report_shown(at) -> None:
    assert "Duplicates" in texts(at.subheader)
    assert "2 pairs of duplicate images (1 exact, 1 near), involving 4 images of 18." in texts(at.markdown)
    warnings = texts(at.warning)
    assert any(w.startswith("1 pair across train/val/test (a leak)") for w in warnings)
    assert any(w.startswith("1 pair in different classes (conflicting labels)") for w in warnings)
    pairs = section(at)
    assert pairs.label == f"{EXPANDER} (2)"
    assert len(pairs.image) == 4  # two pairs, side by side, the leak first
    assert [i.captions[0] for i in pairs.image[:2]] == [
        "train/cats/1.png (cats · train)",
        "val/cats/leaked.jpg (cats · val)",
    ]
    assert "**Leak** · near duplicate" in texts(pairs.markdown)[0]


def test_a_search_asked_for_runs_as_one_job_with_its_progress_then_shows_the_report(tmp_path, held):
    ds = saved_with_duplicates(tmp_path)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    # Nothing hashed in the page and nothing queued by a look: the section offers the search.
    assert not searches(ds) and not hashes.cached(ds)
    assert any(c.startswith("Not searched yet in this version of the dataset.") for c in texts(at.caption))
    other = open_app("pages/dataset.py", query={"dataset": ds.id})  # another tab, at the same time
    button(at, "Look for duplicates").click().run()
    assert_clean(at)
    button(other, "Look for duplicates").click().run()
    assert_clean(other)
    (job,) = searches(ds)  # both pressed: one search
    assert job.params["dataset_version"] == ds.version and job.owner == ""
    for tab in (at, other):
        assert any(c.startswith(SEARCHING) for c in texts(tab.caption))
        assert [b for b in tab.button if b.key == f"stop_{job.id}"]  # its Stop (Cancel while queued)
        assert not [e for e in tab.expander if e.label.startswith(EXPANDER)]
    held.set()
    assert registry().wait(job.id, timeout=120).state == COMPLETED
    at.run()
    assert_clean(at)
    assert_report_shown(at)
    # A reload finds the report kept beside the dataset: nothing hashed or searched again, no new job.
    cache = ds.root.parent / hashes.CACHE_FILE
    written = cache.stat().st_mtime_ns
    again = open_app("pages/dataset.py", query={"dataset": ds.id})
    assert_report_shown(again)
    assert cache.stat().st_mtime_ns == written and len(searches(ds)) == 1


def test_a_running_search_is_found_again_from_the_address_with_its_progress(tmp_path, held):
    ds = saved_with_duplicates(tmp_path)
    job = registry().submit_task(DUPLICATES, {}, owner="", dataset=ds)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    assert any(c.startswith(SEARCHING) for c in texts(at.caption)) and [j.id for j in searches(ds)] == [job.id]
    held.set()
    registry().wait(job.id, timeout=120)
    at.run()
    assert_report_shown(at)


def test_hashes_on_disk_show_the_report_without_a_job(tmp_path):
    ds = saved_with_duplicates(tmp_path)
    duplicates.find_duplicates(ds)  # as `python -m core inspect` leaves it: the hashes and the report kept
    assert_report_shown(open_app("pages/dataset.py", query={"dataset": ds.id}))
    # Hashes alone (a training hashed them to check its split): a small dataset is compared in the page.
    (ds.root.parent / duplicates.REPORT_FILE).unlink()
    assert_report_shown(open_app("pages/dataset.py", query={"dataset": ds.id}))
    assert not searches(ds)


def test_hashes_on_disk_of_a_large_dataset_are_compared_in_a_job(tmp_path, monkeypatch):
    ds = saved_with_duplicates(tmp_path)
    hashes.dataset_hashes(ds)
    monkeypatch.setattr(duplicates_views, "INLINE_IMAGES", 10)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    button(at, "Look for duplicates").click().run()
    (job,) = searches(ds)
    done = registry().wait(job.id, timeout=120)
    assert done.state == COMPLETED and done.stage == "comparing"  # nothing left to hash


def test_a_stopped_search_says_so_and_offers_to_start_again(tmp_path, held):
    ds = saved_with_duplicates(tmp_path)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    button(at, "Look for duplicates").click().run()
    (job,) = searches(ds)
    at.button(key=f"stop_{job.id}").click().run()  # "Cancel" while queued, "Stop" once started: either ends it
    assert_clean(at)
    held.set()
    assert registry().wait(job.id, timeout=120).state == CANCELLED
    at.run()
    assert_clean(at)
    assert any(i.startswith("The duplicate search was stopped.") for i in texts(at.info))
    assert len(searches(ds)) == 1
    button(at, "Look for duplicates").click().run()
    assert_clean(at)
    (new,) = [j for j in searches(ds) if j.id != job.id]
    assert registry().wait(new.id, timeout=120).state == COMPLETED
    at.run()
    assert_report_shown(at)


def test_a_dataset_without_duplicates_says_so_in_one_line(tmp_path):
    entries = {f"{cls}/{k}.png": encoded(photo(400 + 10 * i + k)) for i, cls in enumerate(("a", "b")) for k in range(3)}
    ds = datasets.open_dataset(datasets.save_zip(make_zip(tmp_path / "clean.zip", entries)).id)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    button(at, "Look for duplicates").click().run()
    (job,) = searches(ds)
    assert registry().wait(job.id, timeout=120).state == COMPLETED
    at.run()
    assert "No duplicates among the 6 images (exact or near, resized, recompressed or slightly cropped)." in texts(
        at.caption
    )
    assert not [e for e in at.expander if e.label.startswith(EXPANDER)]


def evaluated_run(name: str, metrics: dict, val: int = 40) -> Path:
    """A run folder as training saves it (no model needed: the page reads its saved evaluation), with ``val``
    validation images and ``metrics``."""
    from core.evaluate.evaluation import compute_metrics

    run = runs_dir() / name
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"")
    files = [f"{'ab'[k % 2]}/{k}.png" for k in range(val)]
    write_json(run / "classes.json", ["a", "b"])
    write_json(run / "config.json", {})
    write_json(run / "metrics.json", {"val_accuracy": 0.9, **metrics})
    write_json(run / "split.json", {"root": str(run / "gone"), "train": ["a/t.png"], "val": files, "test": []})
    ev = compute_metrics([k % 2 for k in range(val)], [[0.9, 0.1] if k % 2 == 0 else [0.2, 0.8] for k in range(val)],
                         ["a", "b"], files, top_k=1)  # fmt: skip
    ev.source, ev.split, ev.data, ev.created = "val", "val", "pets.zip", "2024-05-01T12:00:00"
    (run / "evaluation.json").write_text(json.dumps(ev.to_dict()))
    marker = {"format": RUN_FORMAT, "version": RUN_VERSION, "status": "completed", "finished": "2024-05-01T11:00:00",
              "dataset": "pets.zip", "val_accuracy": 0.9}  # fmt: skip
    write_json(run / MARKER, marker)
    return run


def test_evaluate_warns_when_validation_images_duplicate_training_images(tmp_path):
    run = evaluated_run("20240501-110000-pets-leak", {"val_duplicates": 3, "val_duplicates_dropped": 0})
    at = open_app("pages/evaluate.py", query={"run": run.name})
    message = "3 of 40 validation images duplicate training images: the validation accuracy is likely optimistic."
    assert message in texts(at.warning)
    assert not [w for w in texts(at.warning) if "Training kept them" in w]


def test_evaluate_says_why_training_kept_more_duplicates_than_its_limit(tmp_path):
    metrics = {"val_duplicates": 12, "val_duplicates_dropped": 0, "val_duplicates_over_limit": 0.05}
    run = evaluated_run("20240501-110000-pets-alike", metrics)
    at = open_app("pages/evaluate.py", query={"run": run.name})
    [warning] = [w for w in texts(at.warning) if "duplicate training images" in w]
    assert warning.startswith("12 of 40 validation images duplicate training images")
    assert "more than the 5% of validation the check drops on its own" in warning
    assert "train again with a higher “Drop at most this share of validation”" in warning


def test_evaluate_says_nothing_for_a_clean_run_or_one_trained_before_the_check(tmp_path):
    for name, metrics in (("20240501-110000-pets-clean", {"val_duplicates": 0, "val_duplicates_dropped": 2}),
                          ("20240501-100000-pets-old", {})):  # fmt: skip
        run = evaluated_run(name, metrics)
        at = open_app("pages/evaluate.py", query={"run": run.name})
        assert_clean(at)
        assert not [w for w in texts(at.warning) if "duplicate training images" in w]


def test_the_train_form_offers_the_drop_switch_on_by_default(tmp_path):
    from pagetest import load

    at = open_app("pages/train.py", dataset=load(tmp_path).id)
    switch = at.checkbox(key="cfg_drop_val_duplicates")
    assert switch.value is True and switch.label == "Drop validation images that duplicate training images"
    limit = at.slider(key="cfg_val_duplicates_limit")
    assert limit.value == 0.05 and limit.label == "Drop at most this share of validation"
    switch.uncheck().run()
    assert not [s for s in at.slider if s.key == "cfg_val_duplicates_limit"]  # nothing to limit when off
