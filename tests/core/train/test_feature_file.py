"""Features on disk: the file's rows, the batches a fit reads, and a whole training streamed from disk."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from conftest import class_entries, make_zip

from core.config import TrainConfig
from core.data.dataset import load_dataset
from core.model.build import build_model
from core.model.predict import load_run, predict
from core.train import feature_file, features, training
from core.train.cache import ArrayCache
from core.train.feature_file import Batches, FeatureFile, sample_weights
from core.train.features import extract, plan_training, read_ahead

FAST = {"weights": "none", "head": "gap", "image_size": 32, "unfreeze": 3, "batch_size": 4, "epochs": 2,
        "optimizer": "adam", "learning_rate": 0.01, "decay": 0.0, "precision": "float32"}  # fmt: skip


def test_rows_come_back_as_written_in_any_order_and_the_file_is_gone(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 3, 2)).astype(np.float32)
    store = FeatureFile.create(tmp_path, 50, (3, 2))
    for i in rng.permutation(50):
        store.write(int(i), data[i])
    assert list(tmp_path.iterdir()) == []  # unlinked at once: a crash leaves nothing behind
    for index in ([0], [49], [3, 4, 5, 6], [7, 2, 9, 8, 8, 1], list(range(50)), rng.permutation(50)):
        np.testing.assert_array_equal(store.rows(index), data[np.asarray(index)])
    with pytest.raises(ValueError, match="bytes"):
        store.write(0, np.zeros(5, np.float32))
    store.close()


def test_batches_cover_every_row_once_per_epoch_and_reshuffle(tmp_path):
    store = FeatureFile.create(tmp_path, 30, (2,))
    for i in range(30):
        store.write(i, np.array([i, -i], np.float32))
    y = np.eye(3, dtype=np.float32)[np.arange(30) % 3]
    batches = Batches(store, range(5, 30), y[5:], batch_size=4, shuffle=True, seed=1,
                      sample_weight=sample_weights(y[5:], {0: 2.0, 1: 1.0, 2: 0.5}))  # fmt: skip
    assert len(batches) == 7  # 25 rows in batches of 4

    def epoch():
        seen = []
        for b in range(len(batches)):
            x, labels, w = batches[b]
            rows = x[:, 0].astype(int)
            np.testing.assert_array_equal(labels, y[rows])  # each row with its own label and weight
            np.testing.assert_array_equal(w, np.array([2.0, 1.0, 0.5], np.float32)[rows % 3])
            seen += rows.tolist()
        return seen

    first = epoch()
    batches.on_epoch_end()
    second = epoch()
    assert sorted(first) == sorted(second) == list(range(5, 30))
    assert first != second
    (x,) = Batches(store, [9, 3], None, batch_size=8)[0]
    np.testing.assert_array_equal(x[:, 0], [9, 3])
    assert sample_weights(y, None) is None


def test_read_ahead_keeps_order_and_stays_within_its_window():
    from concurrent.futures import ThreadPoolExecutor

    started, lock = [], threading.Lock()

    def slow(i):
        with lock:
            started.append(i)
        time.sleep(0.001)
        return i * i

    with ThreadPoolExecutor(4) as pool:
        out = []
        for n, value in enumerate(read_ahead(pool, slow, range(40), window=5)):
            out.append(value)
            time.sleep(0.002)
            with lock:
                assert len(started) <= n + 1 + 5  # never more than the window ahead of what was consumed
    assert out == [i * i for i in range(40)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("stream")
    return load_dataset(make_zip(base / "colours.zip", class_entries(per_class=12)), base / "work")


def test_streamed_features_equal_the_in_memory_ones(dataset, tmp_path, monkeypatch):
    config = TrainConfig(**FAST)
    plan = plan_training(build_model(config, 2))
    paths = dataset.paths()
    memory = extract(plan, paths, config, ArrayCache(tmp_path / "a"))
    monkeypatch.setattr(features, "STREAM_BYTES", 0)
    cache = ArrayCache(tmp_path / "b")
    for _ in range(2):  # computed, then read from the cache
        disk = extract(plan, paths, config, cache, stream=True)
        assert isinstance(disk, FeatureFile) and not isinstance(memory, FeatureFile)
        np.testing.assert_allclose(disk.rows(range(len(paths))), memory, rtol=1e-6)
        disk.close()
    assert not any(p.suffix == feature_file.SUFFIX for p in (tmp_path / "b").rglob("*"))


@pytest.mark.parametrize("streamed", [True, False])
def test_a_training_streamed_from_disk_learns_and_saves_a_working_run(dataset, tmp_path, monkeypatch, streamed):
    if streamed:
        monkeypatch.setattr(features, "STREAM_BYTES", 0)
    monkeypatch.setattr(training, "OOD_FIT_IMAGES", 8)  # "none of these" from a draw of the training images
    opened = []
    real_create = FeatureFile.create

    def create(*args, **kwargs):
        opened.append(real_create(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(FeatureFile, "create", create)
    config = TrainConfig(**{**FAST, "epochs": 10, "class_weight": "balanced", "validation_split": 0.5})
    result = training.train(dataset, config, tmp_path / "run")
    assert len(opened) == streamed and all(f._fd == -1 for f in opened)  # one file, closed when the run was saved
    assert result.metrics["path"] == "cached features" and result.metrics["epochs_completed"] == 10
    assert len(result.history) == 10 and all(np.isfinite(row["loss"]) for row in result.history)
    assert result.metrics["val_accuracy"] >= 0.75  # blue vs red squares
    assert result.metrics["none_of_these"]["feature_size"] == 512  # fitted from batches of the file
    run = load_run(result.run_dir)
    answers = predict(run, [str(p) for p in dataset.paths()])
    right = sum(p.top[0][0] == dataset.classes[it.label] for p, it in zip(answers, dataset.items, strict=True))
    assert right / len(answers) >= 0.75
    assert os.path.exists(result.run_dir / "none_of_these.npz")
