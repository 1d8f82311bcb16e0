"""The "none of these" score (core.model.ood): the fit and the score on synthetic Gaussian clusters, the threshold,
the AUROC, the classes held out in turn, the Keras layer that carries the score (same numbers, tf.function with XLA,
a .keras file), and a run's record."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.covariance import ledoit_wolf
from sklearn.metrics import roc_auc_score

from core.model import ood

D, CLASSES = 64, 3


def clusters(n_per_class: int, seed: int, d: int = D, spread: float = 1.0):
    """Gaussian clusters around fixed means (seed 0) with one shared, correlated covariance; fresh samples per seed."""
    means = np.random.default_rng(0).normal(0, 4, (CLASSES, d))
    mix = np.random.default_rng(1).normal(0, 1, (d, d)) / np.sqrt(d)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(CLASSES), n_per_class)
    x = means[y] + spread * rng.normal(0, 1, (len(y), d)) @ mix
    return x, y


def test_in_distribution_images_are_flagged_at_about_the_rate_and_far_ones_always():
    x, y = clusters(60, seed=2)
    val, _ = clusters(200, seed=3)
    fresh, _ = clusters(400, seed=4)
    fitted = ood.fit(x, y)
    at = ood.threshold(fitted.scores(val), 0.05)
    assert np.mean(fitted.scores(val) > at) == pytest.approx(0.05, abs=0.01)
    assert np.mean(fitted.scores(fresh) > at) == pytest.approx(0.05, abs=0.03)  # new images of the same classes
    far = np.random.default_rng(5).normal(0, 4, (300, D))  # elsewhere in the space: near no class mean
    assert np.mean(fitted.scores(far) > at) > 0.99
    between = (x[y == 0][:50] + x[y == 1][:50]) / 2  # halfway between two classes: like neither
    assert np.mean(fitted.scores(between) > at) > 0.9


def test_the_score_is_the_smallest_squared_mahalanobis_distance_under_the_shrunk_covariance():
    x, y = clusters(30, seed=6)
    fitted = ood.fit(x, y)
    means = np.stack([x[y == c].mean(0) for c in range(CLASSES)])
    cov, shrinkage = ledoit_wolf(x - means[y], assume_centered=True)  # the same estimator, by scikit-learn
    assert fitted.shrinkage == pytest.approx(shrinkage, rel=1e-9)
    probe = np.random.default_rng(7).normal(0, 4, (20, D))
    diff = probe[:, None, :] - means[None]
    expected = np.einsum("ncd,de,nce->nc", diff, np.linalg.inv(cov), diff).min(axis=1)
    np.testing.assert_allclose(fitted.scores(probe), expected, rtol=1e-6)
    np.testing.assert_allclose(fitted.whiten @ fitted.whiten.T @ cov, np.eye(D), atol=1e-8)  # W W^T = Sigma^-1


def test_with_more_images_than_features_it_is_the_same_estimator():
    x, y = clusters(200, seed=8, d=16)  # 600 images, 16 features
    fitted = ood.fit(x, y)
    means = np.stack([x[y == c].mean(0) for c in range(CLASSES)])
    cov, shrinkage = ledoit_wolf(x - means[y], assume_centered=True)
    assert fitted.shrinkage == pytest.approx(shrinkage, rel=1e-9) and shrinkage < 0.2  # plenty of images
    np.testing.assert_allclose(fitted.whiten @ fitted.whiten.T @ cov, np.eye(16), atol=1e-8)


def test_identical_images_do_not_divide_by_zero():
    x = np.repeat(np.eye(2, 8) * 5, 4, axis=0)  # two classes, four copies each of one feature vector
    fitted = ood.fit(x, np.repeat([0, 1], 4))
    scores = fitted.scores(np.vstack([x[:1], x[:1] + 1.0]))
    assert np.all(np.isfinite(scores)) and scores[0] == pytest.approx(0.0, abs=1e-6) and scores[1] > 1e3


def test_the_threshold_is_the_quantile_of_the_validation_scores():
    scores = np.random.default_rng(9).gamma(2.0, 10.0, 57)
    for rate in (0.01, 0.05, 0.2, 0.5):
        assert ood.threshold(scores, rate) == np.quantile(scores, 1 - rate)
    assert np.mean(scores > ood.threshold(scores, 0.1)) <= 0.1 + 1 / len(scores)  # the quantile interpolates


def test_auroc_from_ranks_matches_scikit_learn_ties_included():
    assert ood.auroc([1, 2, 3], [4, 5]) == 1.0 and ood.auroc([4, 5], [1, 2, 3]) == 0.0
    assert ood.auroc([1, 2], [1, 2]) == 0.5 and ood.auroc([], [1]) is None
    rng = np.random.default_rng(10)
    inside, outside = rng.integers(0, 20, 300), rng.integers(5, 25, 80)  # many ties
    truth = np.r_[np.zeros(300), np.ones(80)]
    assert ood.auroc(inside, outside) == pytest.approx(roc_auc_score(truth, np.r_[inside, outside]), abs=1e-12)


def test_a_class_held_out_in_turn_is_caught_when_it_is_unlike_the_others():
    x, y = clusters(40, seed=11)
    val_x, val_y = clusters(40, seed=12)
    rows = ood.held_out_classes(x, y, val_x, val_y, ["a", "b", "c"], rate=0.05)
    assert [r["class"] for r in rows] == ["a", "b", "c"] and all(r["images"] == 40 for r in rows)
    assert all(r["flagged"] > 0.9 and r["auroc"] > 0.99 for r in rows)  # far-apart clusters: each one is new


def test_a_class_held_out_is_scored_exactly_as_by_a_fit_without_it():
    x, y = clusters(40, seed=17)
    val_x, val_y = clusters(15, seed=18)
    rows = ood.held_out_classes(x, y, val_x, val_y, ["a", "b", "c"], rate=0.2)
    without = ood.fit(x[y != 1], y[y != 1])  # from scratch
    inside, outside = without.scores(val_x[val_y != 1]), without.scores(val_x[val_y == 1])
    assert rows[1]["flagged"] == np.mean(outside > ood.threshold(inside, 0.2))
    assert rows[1]["auroc"] == pytest.approx(ood.auroc(inside, outside), abs=1e-12)


def test_a_class_held_out_that_sits_inside_another_is_not_caught():
    x, y = clusters(40, seed=13)
    val_x, val_y = clusters(40, seed=14)
    x[y == 2], val_x[val_y == 2] = x[y == 1] + 0.01, val_x[val_y == 1] + 0.01  # class c is a copy of class b
    rows = {r["class"]: r for r in ood.held_out_classes(x, y, val_x, val_y, ["a", "b", "c"], rate=0.05)}
    assert rows["c"]["flagged"] < 0.3 and rows["a"]["flagged"] > 0.9


def state(seed: int = 15) -> ood.State:
    x, y = clusters(40, seed=seed)
    val_x, val_y = clusters(20, seed=seed + 1)
    return ood.fit_run(x, y, val_x, val_y, ["a", "b", "c"], rate=0.1)


def test_fit_run_thresholds_on_validation_and_records_what_it_did():
    s = state()
    assert s.threshold == pytest.approx(ood.threshold(s.validation_scores, 0.1), abs=1e-3)  # they are rounded
    assert s.validation_flagged == pytest.approx(0.1, abs=0.02) and s.validation_images == 60
    assert s.train_images == 120 and s.feature_size == D and len(s.held_out) == 3 and s.method == ood.METHOD


def test_a_saved_state_loads_back_and_a_run_without_one_cannot_say(tmp_path):
    s = state()
    ood.save(tmp_path, s)
    back = ood.load(tmp_path)
    assert back.threshold == s.threshold and back.classes == s.classes and back.held_out == s.held_out
    probe = clusters(10, seed=30)[0]
    np.testing.assert_allclose(back.fit.scores(probe), s.fit.scores(probe), rtol=1e-4)  # stored as float32
    record = json.loads((tmp_path / ood.FILE).read_text())
    assert record["fitted"] and record["feature_size"] == D and record["layer"] == "predictions"
    assert ood.reason(tmp_path) == ""

    old = tmp_path / "old"
    old.mkdir()
    assert ood.load(old) is None and "before" in ood.reason(old)  # a run from before "none of these"
    ood.save(old, None, ood.why_not(0.0, 50))
    assert ood.load(old) is None and "turned it off" in ood.reason(old)
    assert "only 4 validation images" in ood.why_not(0.05, 4)
    (tmp_path / ood.ARRAYS).write_bytes(b"damaged")
    assert ood.load(tmp_path) is None


# ---------------------------------------------------------------------------------------------- Keras


def tiny_model(d: int = D) -> keras.Model:
    """A model shaped like the app's: a few layers, then the Dense named "predictions"."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="image")
    x = keras.layers.Dense(d, activation="relu", name="head_dense")(inputs)
    x = keras.layers.Dropout(0.5, name="head_dropout")(x)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, out)


def fitted_for(model: keras.Model, rate: float = 0.1) -> tuple[ood.State, np.ndarray]:
    rng = np.random.default_rng(16)
    x = rng.normal(0, 1, (90, 8)).astype(np.float32)
    f = np.asarray(ood.features_model(model).predict(x, verbose=0))
    y = np.arange(90) % CLASSES
    return ood.fit_run(f[:60], y[:60], f[60:], y[60:], ["a", "b", "c"], rate), x


def test_the_layer_gives_the_numpy_score_in_the_same_pass_as_the_probabilities():
    model = tiny_model()
    s, x = fitted_for(model)
    two = ood.score_model(model, s)
    probs, scores = two(x, training=False)
    np.testing.assert_allclose(np.asarray(probs), model.predict(x, verbose=0), atol=1e-6)
    features = ood.features_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(scores), s.fit.scores(features), rtol=2e-4, atol=1e-2)
    assert scores.dtype == "float32" and tuple(scores.shape) == (90,)
    assert not two.get_layer("none_of_these_score").trainable_weights
    compiled = tf.function(lambda batch: two(batch, training=False), jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(x)[1]), np.asarray(scores), rtol=1e-4, atol=1e-3)


def test_a_model_carrying_the_score_saves_and_loads_in_safe_mode(tmp_path):
    model = tiny_model()
    s, x = fitted_for(model)
    two = ood.score_model(model, s)
    two.save(tmp_path / "with_score.keras")
    loaded = keras.saving.load_model(tmp_path / "with_score.keras", compile=False, safe_mode=True)
    for a, b in zip(loaded(x, training=False), two(x, training=False), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_the_penultimate_features_are_read_in_the_model_s_own_graph():
    model = tiny_model()
    tail_input = keras.Input((8,))
    x = tail_input
    for layer in model.layers[1:]:
        x = layer(x)
    tail = keras.Model(tail_input, x)  # the same layers, a second graph (as training's tail)
    probe = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(ood.features_model(tail).predict(probe, verbose=0),
                               ood.features_model(model).predict(probe, verbose=0), rtol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="predictions"):
        ood.features_model(keras.Model(model.inputs[0], model.get_layer("head_dense").output))


def test_a_state_fits_only_a_model_whose_last_layer_reads_as_many_features():
    model = tiny_model()
    s, _ = fitted_for(model)
    assert ood.fits(model, s) and not ood.fits(tiny_model(d=32), s)
