"""The duplicate search as a job: in a worker process of its own on a real saved dataset (a zip of Pillow images
with a leak and a conflicting label), its progress counted per stage, its report found again beside the dataset
and with the job (by a registry of another process, as after a restart); two asks at once giving one job; a stop
honoured mid-hashing that keeps what was hashed, so the next search hashes only the rest."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import encoded, make_zip, photo

from core.data import duplicates, hashes
from core.jobs.kinds import DUPLICATES, KINDS
from core.jobs.registry import JobRegistry
from core.jobs.states import CANCELLED, COMPLETED, PROCESS, THREAD
from core.workspace.datasets import open_dataset, save_zip

TIMEOUT = 600


@pytest.fixture
def dataset(tmp_path):
    """A saved split dataset: train/cats/1 recompressed into val/ (a leak), train/cats/2 again in dogs/ (conflicting
    labels), 16 different photos otherwise."""
    entries = {}
    for part, offset in (("train", 0), ("val", 1000)):
        for cls, base in (("cats", 200), ("dogs", 300)):
            for k in range(4):
                entries[f"{part}/{cls}/{k}.png"] = encoded(photo(base + offset + k))
    entries["val/cats/leaked.jpg"] = encoded(photo(201), "JPEG", quality=60)
    entries["train/dogs/cat.png"] = encoded(photo(202))
    saved = save_zip(make_zip(tmp_path / "pets.zip", entries), owner="ann@example.com")
    return open_dataset(saved.id)


@pytest.fixture
def new_registry():
    made = []

    def make(**kwargs) -> JobRegistry:
        made.append(JobRegistry(**{"max_running": 1, **kwargs}))
        return made[-1]

    yield make
    for reg in made:
        reg.close()


def test_a_duplicates_job_in_a_worker_process_keeps_its_report_for_any_process_to_read(dataset, new_registry):
    assert KINDS[DUPLICATES].label == "duplicate search"
    reg = new_registry(executor=PROCESS)
    job = reg.submit_task(DUPLICATES, {}, owner="ann@example.com", dataset=dataset)
    assert job.dataset_id == dataset.id and job.params["dataset_version"] == dataset.version
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == COMPLETED, done.error
    assert done.stage == "comparing" and done.done == done.total == 18 * 17 // 2  # every pair, counted
    assert {k: done.metrics[k] for k in ("images", "pairs", "leaks", "different_classes")} == {
        "images": 18, "pairs": 2, "leaks": 1, "different_classes": 1
    }  # fmt: skip
    # Found again as after a restart: beside the dataset (read without hashing anything) and with the job.
    again = open_dataset(dataset.id, touch=False)
    assert hashes.cached(again)
    kept = duplicates.kept(again)
    assert kept is not None and kept.to_dict() == done.result
    assert [(p.relation, p.a, p.b) for p in kept.pairs] == [
        ("leak", "train/cats/1.png", "val/cats/leaked.jpg"),
        ("different classes", "train/cats/2.png", "train/dogs/cat.png"),
    ]
    other = JobRegistry(dispatch=False)  # another process's registry: the same job, found by its dataset
    assert other.latest(DUPLICATES, again).id == job.id and other.get(job.id).result == done.result


def test_two_asks_at_once_give_one_job_and_a_finished_one_is_not_reused(dataset, new_registry, monkeypatch):
    reg = new_registry(executor=THREAD)
    hold = threading.Event()
    real = hashes.hash_images
    monkeypatch.setattr(hashes, "hash_images", lambda *a, **k: (hold.wait(60), real(*a, **k))[1])
    asked, barrier = [], threading.Barrier(4)

    def ask() -> None:
        barrier.wait()
        asked.append(reg.submit_task(DUPLICATES, {}, owner="", dataset=dataset, once=True).id)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(asked)) == 1 and len(asked) == 4
    assert [j.id for j in reg.jobs() if j.kind == DUPLICATES] == asked[:1]
    hold.set()
    assert reg.wait(asked[0], timeout=TIMEOUT).state == COMPLETED
    assert reg.latest(DUPLICATES, dataset).id == asked[0]
    new = reg.submit_task(DUPLICATES, {}, owner="", dataset=dataset, once=True)  # "once" spares only a live one
    assert new.id != asked[0]


def test_a_stop_mid_hashing_is_honoured_and_the_next_search_hashes_only_the_rest(dataset, new_registry, monkeypatch):
    reg = new_registry(executor=THREAD)
    monkeypatch.setattr(hashes, "SAVE_EVERY", 6)
    monkeypatch.setattr(hashes, "WORKERS", 1)
    real = hashes.image_hashes
    slow = threading.Event()

    def image_hashes(path):
        if slow.is_set():
            time.sleep(0.3)
        return real(path)

    monkeypatch.setattr(hashes, "image_hashes", image_hashes)
    slow.set()
    job = reg.submit_task(DUPLICATES, {}, owner="ann@example.com", dataset=dataset)
    deadline = time.monotonic() + TIMEOUT
    while not (snap := reg.get(job.id, points=False)).done >= 7:  # past the first 6, saved
        assert not snap.finished, snap.error
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert snap.stage == "hashing" and snap.total == 18
    reg.stop(job.id, "ann@example.com")
    done = reg.wait(job.id, timeout=TIMEOUT)
    assert done.state == CANCELLED and done.result is None
    saved = hashes.read_hashes(dataset.store)
    assert saved is not None and 6 <= len(saved.paths) < 18  # what was saved before the stop is kept
    slow.clear()
    again = reg.wait(reg.submit_task(DUPLICATES, {}, owner="", dataset=dataset).id, timeout=TIMEOUT)
    assert again.state == COMPLETED and again.metrics["pairs"] == 2
    assert duplicates.kept(dataset).pairs_total == 2
