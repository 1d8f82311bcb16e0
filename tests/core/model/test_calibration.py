"""Calibration: a temperature fitted on validation makes an overconfident model honest on held-out images, lives in
the saved model's weights (so ``predict`` and a reload apply it), and the "not sure" threshold reaches its target."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import class_entries, make_zip, tiny_config

from core.data.dataset import load_dataset
from core.model import calibration
from core.model.build import fold_temperature
from core.model.predict import NOT_SURE, load_run, predict
from core.train.training import train


def _overconfident(n: int, classes: int = 4, seed: int = 0, sharpness: float = 4.0):
    """Labels and probabilities of a model whose logits are ``sharpness`` times the honest ones over 1.5."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), y] += 1.5  # the true class is favoured, not certain
    z = sharpness * logits
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def test_temperature_scaling_lowers_nll_and_ece_on_held_out_images():
    fit_p, fit_y = _overconfident(600, seed=1)
    held_p, held_y = _overconfident(2000, seed=2)
    t = calibration.fit_temperature(fit_p, fit_y)
    # The true class's logit is shifted by 1.5 in unit noise, so the honest probabilities are softmax(1.5 * logits):
    # the model's 4 * logits are too sharp by 4 / 1.5.
    assert t == pytest.approx(4.0 / 1.5, rel=0.15)
    after = calibration.rescale(held_p, t)
    assert calibration.nll(after, held_y) < 0.8 * calibration.nll(held_p, held_y)
    assert calibration.ece(after, held_y) < 0.05 < calibration.ece(held_p, held_y)
    assert (after.argmax(1) == held_p.argmax(1)).all()  # no prediction changes


def test_a_calibrated_model_keeps_its_temperature():
    p, y = _overconfident(2000, sharpness=1.5, seed=3)  # honest already
    assert calibration.fit_temperature(p, y) == pytest.approx(1.0, abs=0.15)


def test_reliability_bins_and_ece_by_hand():
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    bins = calibration.reliability(p, y)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4
    top = bins[-1]  # 0.95 falls in [14/15, 1]
    assert top["count"] == 2 and top["accuracy"] == 0.5 and top["confidence"] == pytest.approx(0.95)
    # |0.95 - 0.5| * 2/4 + |0.55 - 1| * 1/4 + |0.7 - 1| * 1/4
    assert calibration.ece(p, y) == pytest.approx(0.45 * 0.5 + 0.45 * 0.25 + 0.3 * 0.25)


def test_the_threshold_is_the_lowest_that_reaches_its_target():
    p, y = _overconfident(1000, sharpness=1.5, seed=4)
    choice = calibration.choose_threshold(p, y, target=0.95)
    conf, right = p.max(1), p.argmax(1) == y
    accepted = conf >= choice.threshold
    assert right[accepted].mean() >= 0.95
    assert choice.coverage == pytest.approx(accepted.mean()) and choice.accuracy == pytest.approx(
        right[accepted].mean()
    )
    assert 0.05 < choice.coverage < 0.9
    # any lower threshold (the next less confident image) falls short
    lower = conf[conf < choice.threshold].max()
    assert right[conf >= lower].mean() < 0.95
    # the curve (at most 200 points, both ends kept) agrees with the choice
    curve = calibration.coverage_curve(p, y)
    assert len(curve) <= calibration.CURVE_POINTS and curve[-1]["coverage"] == 1.0
    assert curve[0]["threshold"] == conf.max() and curve[-1]["accuracy"] == pytest.approx(right.mean())
    point = min(curve, key=lambda c: abs(c["threshold"] - choice.threshold))
    assert point["coverage"] == pytest.approx(choice.coverage, abs=0.01)


def test_a_threshold_needs_enough_answered_images():
    # the two most confident images are right, the next eight are right one time in two
    p = np.array([[0.99, 0.01]] + [[0.6 - 0.01 * i, 0.4 + 0.01 * i] for i in range(9)])
    y = np.array([0] + [i % 2 for i in range(9)])
    assert calibration.choose_threshold(p, y, min_answered=1).threshold == pytest.approx(0.6)
    assert calibration.choose_threshold(p, y).threshold is None  # two right out of two say nothing


def test_no_threshold_when_the_target_is_out_of_reach_and_all_when_everything_is_right():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    assert calibration.choose_threshold(p, np.array([1, 1, 1])).threshold is None
    every = calibration.choose_threshold(p, np.array([0, 0, 0]))
    assert every.threshold == pytest.approx(0.7) and every.coverage == 1.0


def test_too_few_images_or_opting_out_leaves_the_model_alone():
    p, y = _overconfident(8)
    assert not calibration.calibrate(p, y).calibrated
    report = calibration.calibrate(*_overconfident(100), enabled=False)
    assert report.temperature == 1.0 and "opted out" in report.reason
    assert report.ece_before == report.ece_after


def test_folding_the_temperature_into_the_last_layer_is_rescaling():
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("predictions").set_weights([np.random.default_rng(0).normal(0, 3, (5, 3)), np.ones(3)])
    x = np.random.default_rng(1).normal(0, 1, (16, 5)).astype("float32")
    raw = model.predict(x, verbose=0)
    fold_temperature(model, 2.5)
    np.testing.assert_allclose(model.predict(x, verbose=0), calibration.rescale(raw, 2.5), atol=1e-5)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    base = tmp_path_factory.mktemp("calibration")
    entries = class_entries(classes=("red", "green", "blue"), per_class=20)
    return load_dataset(make_zip(base / "colours.zip", entries), base / "work")


def test_training_calibrates_and_predict_applies_the_saved_temperature(colours, tmp_path):
    # validation_split 0.5: 30 validation images, enough to fit a temperature
    result = train(colours, tiny_config(epochs=3, validation_split=0.5), tmp_path / "run")
    report = calibration.load(tmp_path / "run")
    assert report.calibrated and report.images == 30 and report.temperature != 1.0
    assert report.nll_after <= report.nll_before + 1e-9
    assert result.metrics["calibration"]["temperature"] == pytest.approx(report.temperature, abs=1e-4)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["calibrate"] is True

    # The model as saved and loaded gives the calibrated probabilities: its last layer, unfolded, gives the raw ones.
    run = load_run(tmp_path / "run")
    files = [str(colours.root / it.path) for it in colours.items[:6]]
    calibrated = np.array([[pr for _, pr in sorted(p.top)] for p in predict(run, files, top_k=3)])
    layer = run.model.get_layer("predictions")
    kernel, bias = layer.get_weights()
    try:
        layer.set_weights([kernel * report.temperature, bias * report.temperature])
        raw = run.model.predict(np.stack([run_image(run, f) for f in files]), verbose=0)
    finally:
        layer.set_weights([kernel, bias])
    order = np.argsort(run.classes)  # predict's rows were sorted by class name above
    np.testing.assert_allclose(calibrated, calibration.rescale(raw, report.temperature)[:, order], atol=1e-4)


def run_image(run, path):
    from core.model.inputs import load_image

    return load_image(path, run.config.image_size, run.config.resize)


def test_a_run_can_opt_out(colours, tmp_path):
    train(colours, tiny_config(epochs=1, validation_split=0.5, calibrate=False), tmp_path / "run")
    report = calibration.load(tmp_path / "run")
    assert not report.calibrated and report.temperature == 1.0 and "opted out" in report.summary()
    assert report.curve  # the threshold is still chosen, on the raw probabilities


def test_predict_says_not_sure_below_the_threshold_and_keeps_the_guesses(trained_run):
    files = [_some_image(trained_run)]
    sure = predict(load_run(trained_run), files, threshold=None)[0]
    assert sure.sure and sure.answer == sure.top[0][0]
    unsure = predict(load_run(trained_run), files, threshold=1.01)[0]
    assert not unsure.sure and unsure.answer == NOT_SURE and unsure.top == sure.top
    # the saved threshold is read afresh at each call
    calibration.set_threshold(trained_run, 1.0)
    assert not predict(load_run(trained_run), files)[0].sure or sure.top[0][1] >= 1.0
    calibration.set_threshold(trained_run, None)
    assert predict(load_run(trained_run), files)[0].sure


def _some_image(run_dir):
    import io

    from PIL import Image

    path = run_dir.parent / "probe.png"
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return str(path)


def test_an_old_run_without_a_record_has_no_threshold_and_can_be_given_one(trained_run, tmp_path):
    (trained_run / calibration.FILE).unlink(missing_ok=True)
    assert calibration.load(trained_run) is None and calibration.threshold_of(trained_run) is None
    report = calibration.set_threshold(trained_run, 0.6, coverage=0.5, accuracy=0.9)
    assert calibration.load(trained_run).threshold == 0.6 and report.threshold_source == "user"
    assert report.temperature == 1.0
    calibration.set_threshold(trained_run, None)


def test_the_cli_says_not_sure_and_prints_the_calibration_error(colours, tmp_path, capsys):
    from core.cli.main import build_parser, main

    args = build_parser().parse_args(["train", "data.zip", "--no-calibrate"])
    assert args.calibrate is False
    run_dir = tmp_path / "runs" / "20240101-000000-colours-cafe"
    train(colours, tiny_config(epochs=2, validation_split=0.5), run_dir)
    report = calibration.load(run_dir)
    calibration.set_threshold(run_dir, 0.999)
    image = str(colours.root / colours.items[0].path)
    capsys.readouterr()
    assert main(["predict", str(run_dir), image]) == 0
    assert "not sure (below the run's 100% threshold; best guesses: " in capsys.readouterr().out
    assert main(["predict", str(run_dir), image, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["answer"] == NOT_SURE and row["sure"] is False and len(row["predictions"]) == 3

    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert (
        f"expected calibration error (15 bins): {report.ece_before:.3f} before calibration, "
        f"{report.ece_after:.3f} after (temperature {report.temperature:.2f})"
    ) in out
    assert "not-sure threshold 100%: answers" in out
