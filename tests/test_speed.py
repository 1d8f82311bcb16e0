"""Time estimates: measured speed is remembered per size, and augmentation costs what end-to-end epochs cost."""

from __future__ import annotations

import json

import pytest

from core.cache import cache_dir
from core.config import TrainConfig
from core.speed import CONV_GMAC, FILE, FIT_FACTOR, estimate, known_speed, measure_speed, record_speed

ALL_CONVS = list(CONV_GMAC)


def test_recorded_speed_is_found_again_and_scaled_to_other_sizes():
    assert known_speed(224, "float32") is None
    record_speed(224, "float32", 4.0)
    assert known_speed(224, "float32") == pytest.approx(4.0)
    assert known_speed(112, "float32") == pytest.approx(16.0)  # a quarter of the pixels
    assert known_speed(224, "bfloat16") is None  # another precision is another machine path
    data = json.loads((cache_dir() / FILE).read_text())
    assert data == {"float32/224": 4.0}


def test_an_unreadable_speed_file_counts_as_no_measurement():
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / FILE).write_text("{not json")
    assert known_speed(224, "float32") is None
    record_speed(224, "float32", 2.5)
    assert known_speed(224, "float32") == pytest.approx(2.5)


def test_measure_speed_times_vgg16_and_records_it():
    speed = measure_speed(32, "float32", images=2)
    assert speed > 0
    assert known_speed(32, "float32") == pytest.approx(speed, rel=1e-3)


def test_augmentation_costs_every_epoch_what_the_cache_costs_once():
    head_only = ["gap", "head_dropout", "predictions"]
    plain = TrainConfig(epochs=30, head="gap", unfreeze=3)
    augmented = TrainConfig(epochs=30, head="gap", unfreeze=3, augment_flip=True)
    cached = estimate(plain, 90, 10, speed=10.0, unfrozen=head_only)
    assert cached.seconds == pytest.approx(100 / 10.0)  # one pass over every image
    aug = estimate(augmented, 90, 10, speed=10.0, unfrozen=head_only)
    # Every epoch, forward only through frozen layers, at Keras fit's pace; then the final score.
    assert aug.seconds == pytest.approx(FIT_FACTOR * (30 * 100 + 10) / 10.0)
    assert aug.cached_seconds == pytest.approx(cached.seconds)
    assert "7:01 min for 30 epochs of 90 training images" in aug.text and "10.0 images/s" in aug.text


def test_unfrozen_convolutions_cost_a_backward_pass_each_epoch():
    everything = TrainConfig(epochs=2, head="gap", unfreeze=100)
    est = estimate(everything, 100, 0, speed=10.0, unfrozen=ALL_CONVS)
    assert est.seconds == pytest.approx(FIT_FACTOR * 2 * 100 * 3 / 10.0)
    two_phase = TrainConfig(epochs=2, head="gap", unfreeze=7, fine_tune_epochs=2)
    est2 = estimate(two_phase, 100, 0, speed=10.0, unfrozen=["block5_conv1", "block5_conv2", "block5_conv3"])
    share = sum(CONV_GMAC[f"block5_conv{i}"] for i in (1, 2, 3)) / sum(CONV_GMAC.values())
    # phase 1: one pass over the images; phase 2: the frozen part once more, then block 5 forward and back.
    assert est2.seconds == pytest.approx((100 + 100 * (1 - share) + FIT_FACTOR * 2 * 100 * 3 * share) / 10.0)
