"""The fused optimizers give Keras' own numbers, step for step, on a real model and real gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.model import fused


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def _train(optimizer, steps: int = 12) -> list[np.ndarray]:
    model = _model(0)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", jit_compile=False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 6)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 32), 3)
    for i in range(steps):
        model.train_on_batch(x[i % 4 * 8 : i % 4 * 8 + 8], y[i % 4 * 8 : i % 4 * 8 + 8])
    return model.get_weights()


SCHEDULE = keras.optimizers.schedules.InverseTimeDecay(0.05, decay_steps=1, decay_rate=0.1)
CASES = [
    ("sgd nesterov", lambda: fused.FusedSGD(0.05, momentum=0.9, nesterov=True),
     lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)),
    ("sgd momentum, decaying rate", lambda: fused.FusedSGD(SCHEDULE, momentum=0.8),
     lambda: keras.optimizers.SGD(SCHEDULE, momentum=0.8)),
    ("plain sgd", lambda: fused.FusedSGD(0.1), lambda: keras.optimizers.SGD(0.1)),
    ("adam", lambda: fused.FusedAdam(0.01), lambda: keras.optimizers.Adam(0.01)),
    ("adamw", lambda: fused.FusedAdamW(0.01, weight_decay=0.05),
     lambda: keras.optimizers.AdamW(0.01, weight_decay=0.05)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "ours", "keras_own"), CASES, ids=[c[0] for c in CASES])
def test_each_fused_optimizer_moves_the_weights_as_keras_own_does(name, ours, keras_own):
    start = _model(0).get_weights()
    got, want = _train(ours()), _train(keras_own())
    assert any(not np.allclose(a, b) for a, b in zip(got, start, strict=True))  # the weights did move
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_a_model_compiled_with_a_fused_optimizer_saves_and_loads_in_safe_mode(tmp_path):
    model = _model(0)
    model.compile(optimizer=fused.FusedSGD(0.01, momentum=0.9, nesterov=True), loss="categorical_crossentropy")
    model.train_on_batch(np.ones((2, 6), "float32"), keras.utils.to_categorical([0, 2], 3))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(again.optimizer, fused.FusedSGD) and again.optimizer.nesterov
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
