"""Prediction with a saved run: safe loading, the per-process cache, ranking, bad files among good ones.

One real run is trained for the module: red vs blue images, VGG16 with random weights at 32 px, gap head.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict

import keras
import numpy as np
import pytest
from conftest import COLORS, class_entries, jpeg_bytes, make_zip, tiny_config

import core.model.predict
from core.config import TrainConfig
from core.data.dataset import load_dataset
from core.model import predict as predict_module
from core.model.inputs import load_image
from core.model.predict import BATCH, forget, load_run, predict
from core.train.training import train
from core.util.errors import UserError
from core.workspace import runs


def loaded_runs() -> list:
    """The folders of the runs in the loaded-model cache, least recently used first."""
    return [run.path for run in predict_module._cache.values()]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    ds = load_dataset(make_zip(base / "colours.zip", class_entries(per_class=10)), base / "work")
    # Frozen random VGG16 features still separate the colours; a large step trains the head in a few epochs.
    config = tiny_config(epochs=5, validation_split=0.2)
    result = train(ds, config, base / "run")
    assert result.status == "completed"
    return result.run_dir


def held_out(n_per_class=6):
    """New images of each colour (seeds the training set never used) and their true classes."""
    images, labels = [], []
    for cls in ("red", "blue"):
        for i in range(n_per_class):
            images.append(jpeg_bytes(COLORS[cls], (50, 40), seed=5000 + i))
            labels.append(cls)
    return images, labels


# ---------------------------------------------------------------------------------------------- loading


def test_load_run_reads_the_run_and_caches_it(run_dir, monkeypatch):
    calls = []
    real = keras.saving.load_model

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", spy)
    monkeypatch.setattr(core.model.predict, "_cache", OrderedDict())
    run = load_run(run_dir)
    assert calls and all(c.get("safe_mode") is True for c in calls)
    assert run.classes == ["blue", "red"]
    assert run.config.image_size == 32 and run.config.head == "gap"
    assert run.info["status"] == "completed"
    assert run.path == run_dir.resolve()
    assert load_run(str(run_dir)) is run
    assert load_run(run_dir / ".." / run_dir.name) is run
    assert len(calls) == 1


def test_a_re_saved_model_is_loaded_again(run_dir, monkeypatch):
    monkeypatch.setattr(core.model.predict, "_cache", OrderedDict())
    first = load_run(run_dir)
    model_file = run_dir / "model.keras"
    stat = model_file.stat()
    try:
        os.utime(model_file, (stat.st_atime, stat.st_mtime + 10))
        second = load_run(run_dir)
        assert second is not first
        assert load_run(run_dir) is second
    finally:
        os.utime(model_file, (stat.st_atime, stat.st_mtime))


def test_load_run_refuses_folders_that_are_not_runs(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"whatever")
    with pytest.raises(UserError, match="not a run"):
        load_run(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        load_run(tmp_path / "missing")


def fake_run(folder, model: keras.Model) -> None:
    folder.mkdir()
    model.save(folder / "model.keras")
    runs.write_json(folder / "classes.json", ["a", "b"])
    runs.write_json(folder / "config.json", TrainConfig(weights="none", image_size=32).to_dict())
    runs.write_json(folder / runs.MARKER, {"format": runs.RUN_FORMAT, "status": "completed"})


def test_safe_mode_refuses_a_model_that_would_run_code(tmp_path):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    fake_run(tmp_path / "evil", keras.Model(inputs, outputs))
    with pytest.raises(UserError) as info:
        load_run(tmp_path / "evil")
    assert "cannot be loaded" in str(info.value) and "safe_mode" in str(info.value)


def dense_run(folder, units: int):
    """A run whose model is one Dense(4 -> units) layer: 5 * units float32 weights, 20 * units bytes."""
    inputs = keras.Input((4,))
    fake_run(folder, keras.Model(inputs, keras.layers.Dense(units)(inputs)))
    return folder.resolve()


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.setattr(core.model.predict, "_cache", OrderedDict())


def test_the_cache_keeps_its_weights_within_the_memory_limit(tmp_path, monkeypatch, empty_cache):
    monkeypatch.setenv("CLASSIFIER_MODEL_CACHE_MB", "0.25")  # 262,144 bytes: two of the 100 KB models fit
    a, b, c = (dense_run(tmp_path / name, 5000) for name in "abc")
    assert load_run(a).nbytes == 100_000
    load_run(b)
    assert loaded_runs() == [a, b]
    load_run(a)  # used again: now b is the least recently used
    load_run(c)
    assert loaded_runs() == [a, c]
    big = dense_run(tmp_path / "big", 20_000)  # 400 KB, over the limit alone: it stays, the others go
    run = load_run(big)
    assert loaded_runs() == [big] and load_run(big) is run


def test_the_cache_holds_at_most_max_loaded_runs(tmp_path, monkeypatch, empty_cache):
    monkeypatch.setattr(core.model.predict, "MAX_LOADED", 2)
    paths = [dense_run(tmp_path / name, 10) for name in "abc"]
    for path in paths:
        load_run(path)
    assert loaded_runs() == paths[1:]


def test_a_bad_memory_limit_is_a_user_error(tmp_path, monkeypatch, empty_cache):
    monkeypatch.setenv("CLASSIFIER_MODEL_CACHE_MB", "lots")
    with pytest.raises(UserError, match="CLASSIFIER_MODEL_CACHE_MB"):
        load_run(dense_run(tmp_path / "a", 10))


def test_forget_drops_a_run_even_once_its_folder_is_gone(tmp_path, empty_cache):
    a, b = dense_run(tmp_path / "a", 10), dense_run(tmp_path / "b", 10)
    first = load_run(a)
    load_run(b)
    assert forget(tmp_path / "a") is True
    assert loaded_runs() == [b]
    assert forget(a) is False
    assert load_run(a) is not first  # loaded again from the disk
    shutil.rmtree(b)
    assert forget(b) is True and loaded_runs() == [a]


# ---------------------------------------------------------------------------------------------- predicting


def test_trained_run_classifies_held_out_images(run_dir):
    images, labels = held_out()
    results = predict(load_run(run_dir), images, top_k=1)
    assert [p.name for p in results] == [f"image {i + 1}" for i in range(len(images))]
    assert all(p.ok and len(p.top) == 1 for p in results)
    correct = sum(p.top[0][0] == label for p, label in zip(results, labels, strict=True))
    assert correct >= len(images) - 1  # red vs blue: at most one slip


def test_top_k_is_ranked_and_probabilities_are_sensible(run_dir):
    images, labels = held_out(3)
    results = predict(load_run(run_dir), images, top_k=2)
    for p in results:
        probs = [pr for _, pr in p.top]
        assert sorted(c for c, _ in p.top) == ["blue", "red"]
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= pr <= 1 for pr in probs)
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)  # both classes shown: the softmax sums to 1
    assert sum(p.top[0][0] == label for p, label in zip(results, labels, strict=True)) >= 5


def test_top_k_is_clipped_to_the_number_of_classes(run_dir):
    run = load_run(run_dir)
    image = jpeg_bytes(COLORS["red"], seed=77)
    assert len(predict(run, [image], top_k=10)[0].top) == 2
    assert len(predict(run, [image], top_k=0)[0].top) == 1
    assert sum(pr for _, pr in predict(run, [image], top_k=1)[0].top) <= 1


def test_bad_files_get_an_error_and_the_others_are_still_classified(run_dir, tmp_path):
    good_red = tmp_path / "red.png"
    good_red.write_bytes(jpeg_bytes(COLORS["red"], seed=901, fmt="PNG"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image at all")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg_bytes(COLORS["blue"], (120, 90), seed=3)[:400])
    sources = [
        str(good_red),
        str(notes),
        jpeg_bytes(COLORS["blue"], seed=902),
        str(tmp_path / "missing.jpg"),
        str(truncated),
        b"\x00\x01garbage",
    ]
    results = predict(load_run(run_dir), sources, top_k=2)
    assert [p.name for p in results] == ["red.png", "notes.txt", "image 3", "missing.jpg", "cut.jpg", "image 6"]
    assert [p.ok for p in results] == [True, False, True, False, False, False]
    assert results[0].top[0][0] == "red" and results[2].top[0][0] == "blue"
    for p in results:
        if not p.ok:
            assert p.top == [] and p.error and "\n" not in p.error
    assert "not an image" in results[1].error


def test_only_bad_files_give_only_errors(run_dir):
    results = predict(load_run(run_dir), [b"nope", b"nope either"], names=["a.jpg", "b.jpg"])
    assert [(p.name, p.ok) for p in results] == [("a.jpg", False), ("b.jpg", False)]
    assert predict(load_run(run_dir), []) == []


def test_probabilities_in_batches_equal_the_models_own_prediction(run_dir):
    run = load_run(run_dir)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (BATCH + 5, 32, 32, 3), dtype=np.uint8)
    ours = run.probabilities(images)
    assert ours.shape == (BATCH + 5, 2) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, run.model.predict(images, verbose=0), atol=1e-5)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-5)


def test_prediction_preprocesses_exactly_as_training(run_dir):
    run = load_run(run_dir)
    image = jpeg_bytes(COLORS["blue"], (64, 40), seed=44)
    expected = run.probabilities(load_image(image, run.config.image_size, run.config.resize)[None])[0]
    (p,) = predict(run, [image], top_k=2)
    assert dict(p.top) == pytest.approx({"blue": float(expected[0]), "red": float(expected[1])}, abs=1e-6)


def test_run_json_marks_the_class_count(run_dir):
    info = json.loads((run_dir / runs.MARKER).read_text())
    assert info["classes"] == 2 and info["image_size"] == 32
