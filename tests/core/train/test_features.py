"""Frozen-prefix feature cache: where the prefix ends, equivalence with end-to-end training, the disk cache."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
from PIL import Image

from core.config import TrainConfig
from core.model.build import build_model, compile_model
from core.model.inputs import load_images
from core.train.cache import ArrayCache
from core.train.features import extract, load_images_cached, plan_training

SIZE = 32


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"weights": "none", "image_size": SIZE, "precision": "float32", **kw})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(24):
        label = i % 2
        base = np.array([200, 40, 40]) if label else np.array([40, 40, 200])
        arr = np.clip(base + rng.integers(-40, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
        p = folder / f"{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
        labels.append(label)
    return paths, np.array(labels)


def test_tutorial_default_caches_everything_before_the_head():
    model = build_model(cfg(), 3)
    plan = plan_training(model)
    names = [layer.name for layer in model.layers]
    assert plan.cached
    assert names[plan.cut] == "head_dense1"  # the last 5 layers: dense, dropout, dense, dropout, predictions
    assert plan.prefix.output.shape[1:] == model.get_layer("flatten").output.shape[1:]
    assert "Fast path" in plan.reason


def test_partial_unfreeze_caches_up_to_the_first_trainable_layer():
    model = build_model(cfg(head="gap", unfreeze=7), 2)  # block5 convs + gap, dropout, predictions
    plan = plan_training(model)
    assert plan.cached
    assert model.layers[plan.cut - 1].name == "block4_pool"
    assert model.layers[plan.cut].name == "block5_conv1"


def test_frozen_dropout_ends_the_prefix():
    # unfreeze 3: head_dense2, head_dropout2, predictions train; frozen head_dropout1 still drops in training
    model = build_model(cfg(unfreeze=3), 2)
    plan = plan_training(model)
    assert model.layers[plan.cut].name == "head_dropout1"


def test_no_cache_when_nothing_is_frozen_or_with_augmentation():
    everything = plan_training(build_model(cfg(unfreeze=1000), 2))
    assert not everything.cached and "no layer" in everything.reason
    augmented = plan_training(build_model(cfg(), 2), augment=True)
    assert not augmented.cached and "augmentation" in augmented.reason


def test_assembled_model_equals_prefix_then_tail(images, tmp_path):
    paths, labels = images
    model = build_model(cfg(head="gap", unfreeze=3), 2)
    plan = plan_training(model)
    feats = extract(plan, paths, cfg(), ArrayCache(tmp_path / "cache"))
    plan.tail.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    plan.tail.fit(feats, keras.utils.to_categorical(labels, 2), epochs=2, batch_size=8, verbose=0)
    x = load_images(paths, SIZE)
    full = np.asarray(model(x, training=False))
    two_step = np.asarray(plan.tail(plan.prefix(x, training=False), training=False))
    np.testing.assert_allclose(full, two_step, atol=1e-5)


def test_cached_and_end_to_end_training_converge_to_the_same_predictions(images, tmp_path):
    paths, labels = images
    y = keras.utils.to_categorical(labels, 2)
    x = load_images(paths, SIZE)
    config = cfg(head="gap", unfreeze=2, optimizer="sgd", learning_rate=0.01)  # predictions + dropout train

    def fresh():
        keras.utils.set_random_seed(7)
        return build_model(config, 2)

    end_to_end = compile_model(fresh(), config)
    end_to_end.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)

    cached_model = fresh()
    plan = plan_training(cached_model)
    assert plan.cached
    feats = extract(plan, paths, config, ArrayCache(tmp_path / "cache"))
    compile_model(plan.tail, config)
    keras.utils.set_random_seed(7)  # same dropout masks as the end-to-end run after its own seeding
    plan.tail.fit(feats, y, epochs=3, batch_size=8, shuffle=False, verbose=0)

    a = np.asarray(end_to_end(x, training=False))
    b = np.asarray(cached_model(x, training=False))
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_second_extraction_is_a_cache_hit_and_settings_change_the_key(images, tmp_path):
    paths, _ = images
    cache = ArrayCache(tmp_path / "cache")
    plan = plan_training(build_model(cfg(), 2))
    first, second, other = {}, {}, {}
    a = extract(plan, paths, cfg(), cache, stats=first)
    b = extract(plan, paths, cfg(), cache, stats=second)
    assert first["misses"] == len(paths) and first["hits"] == 0
    assert second["hits"] == len(paths) and second["misses"] == 0
    # 24 images through all of VGG16's convolutions time this server; a pass of cache hits measures nothing.
    assert first["vgg16_images_per_second"] > 0 and second["vgg16_images_per_second"] is None
    np.testing.assert_array_equal(a, b)
    extract(plan, paths, cfg(resize="pad"), cache, stats=other)
    assert other["misses"] == len(paths)  # another resize is another entry


def test_decoded_image_cache_matches_direct_decoding(images, tmp_path):
    paths, _ = images
    cache = ArrayCache(tmp_path / "cache")
    seen = []
    cold = load_images_cached(paths, SIZE, "crop", cache, progress=lambda d, t: seen.append((d, t)))
    warm = load_images_cached(paths, SIZE, "crop", cache)
    np.testing.assert_array_equal(cold, load_images(paths, SIZE))
    np.testing.assert_array_equal(cold, warm)
    assert seen[-1] == (len(paths), len(paths))
    assert cache.info()["entries"] == len(paths)


def test_cache_is_bounded_and_evicts_least_recently_used(tmp_path):
    cache = ArrayCache(tmp_path / "c", limit_bytes=3 * 1200)
    arr = np.zeros(256, np.float32)  # ~1.1 KB as .npy
    for i in range(6):
        cache.put("ns", f"{i:04d}aaaa", arr)
    import os
    import time

    for i in range(6):  # make entry i older than entry i+1
        p = cache._path("ns", f"{i:04d}aaaa")
        os.utime(p, (time.time() - 100 + i, time.time() - 100 + i))
    cache.trim()
    assert cache.size() <= cache.limit
    assert cache.get("ns", "0005aaaa") is not None  # the newest survives
    assert cache.get("ns", "0000aaaa") is None
    assert cache.clear() > 0 and cache.info()["entries"] == 0


def test_concurrent_writers_leave_a_complete_entry(tmp_path):
    cache = ArrayCache(tmp_path / "c")
    arr = np.arange(100_000, dtype=np.float32)
    threads = [threading.Thread(target=cache.put, args=("ns", "same0000", arr)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(cache.get("ns", "same0000"), arr)
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_extract_reports_its_speed_and_leaves_recording_it_to_the_caller(images, tmp_path):
    from core.train.pace import known_speed

    paths, _ = images
    stats, early = {}, {}
    extract(plan_training(build_model(cfg(head="gap", unfreeze=3), 2)), paths, cfg(), ArrayCache(tmp_path), None, stats)
    assert stats["vgg16_images_per_second"] == pytest.approx(stats["misses"] / stats["feature_seconds"])
    assert known_speed(SIZE, "float32") is None  # core.train.features does not write core.train.pace's file
    # A prefix that stops before block5 does not measure the whole of VGG16.
    partial = plan_training(build_model(cfg(head="gap", unfreeze=7), 2))
    extract(partial, paths, cfg(), ArrayCache(tmp_path / "other"), None, early)
    assert early["misses"] == len(paths) and early["vgg16_images_per_second"] is None
