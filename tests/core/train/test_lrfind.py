"""Learning-rate range test: the suggestion rule on known curves, and real runs on a toy set."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import class_entries, make_zip, run_cli, tiny_config

from core.data.dataset import load_dataset
from core.train.lrfind import lr_find, smooth, suggest
from core.util.errors import UserError


def curve(fall_from: float, fall_to: float, n: int = 100, noise: float = 0.0, seed: int = 0):
    """Loss 1.0 flat, falling to 0.2 between ``fall_from`` and ``fall_to`` (log-linear), then diverging."""
    lrs = np.logspace(-7, 1, n)
    t = np.clip((np.log10(lrs) - np.log10(fall_from)) / (np.log10(fall_to) - np.log10(fall_from)), 0, None)
    loss = np.where(t <= 1, 1.0 - 0.8 * np.clip(t, 0, 1), 0.2 + 3 * (t - 1) ** 2)
    loss = loss + np.random.default_rng(seed).normal(0, noise, n)
    return lrs.tolist(), smooth(loss.tolist())


def test_suggestion_lies_where_the_loss_falls():
    lrs, smoothed = curve(1e-4, 1e-2, noise=0.02)
    s, reason = suggest(lrs, smoothed)
    assert 1e-4 <= s <= 1e-2
    assert "falls fastest" in reason


def test_noise_at_the_start_is_not_taken_for_a_fall():
    lrs, smoothed = curve(1e-3, 1e-1, noise=0.05, seed=4)
    s, _ = suggest(lrs, smoothed)
    assert 1e-3 <= s <= 1e-1


def test_no_suggestion_when_the_loss_never_falls():
    lrs = np.logspace(-7, 1, 100).tolist()
    flat = smooth((1.1 + np.random.default_rng(0).normal(0, 0.02, 100)).tolist())
    s, reason = suggest(lrs, flat)
    assert s is None and "never fell" in reason
    assert suggest(lrs[:5], flat[:5])[0] is None  # too few batches to judge


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


@pytest.fixture
def colours(tmp_path):
    zip_path = make_zip(tmp_path / "c.zip", class_entries(classes=("red", "green", "blue"), per_class=10))
    return load_dataset(zip_path, tmp_path / "work")


def test_range_test_on_a_learnable_toy_set_suggests_a_sane_rate(colours):
    """Every layer trains (random weights learn colours end to end): Adam's usual range, and the loss falls there."""
    finding = lr_find(colours, tiny_config(unfreeze=100, batch_size=8), steps=40)
    assert finding.path == "end to end"
    assert finding.suggestion is not None, finding.reason
    assert 1e-6 <= finding.suggestion <= 1e-2
    i = finding.learning_rates.index(finding.suggestion)
    assert finding.smoothed[i] < finding.smoothed[0]
    # The rate grows exponentially from the start, one step per batch, until the loss diverges.
    ratios = np.diff(np.log(finding.learning_rates))
    assert np.allclose(ratios, ratios[0]) and finding.learning_rates[0] == pytest.approx(1e-7)
    assert max(finding.smoothed) > 2 * min(finding.smoothed) or len(finding.losses) == 40


def test_range_test_uses_the_feature_cache_and_saves_nothing(colours, isolated_dirs):
    from core.train.cache import ArrayCache
    from core.train.pace import known_speed
    from core.workspace.runs import list_runs

    cache = ArrayCache()
    stages = []
    first = lr_find(colours, tiny_config(), steps=20, cache=cache, progress=lambda s, d, t: stages.append(s))
    assert first.path == "cached features"
    assert stages[0] == "features" and stages[-1] == "testing"
    assert known_speed(32, "float32") > 0  # its pass through every convolution timed this server for estimates
    entries = cache.info()["entries"]
    assert entries > 0
    stages.clear()
    lr_find(colours, tiny_config(optimizer="sgd"), steps=20, cache=cache, progress=lambda s, d, t: stages.append(s))
    assert cache.info()["entries"] == entries  # every feature came from the cache
    assert list_runs() == []
    assert not (isolated_dirs / "runs").exists() or not any((isolated_dirs / "runs").iterdir())


def test_range_test_refuses_bad_bounds(colours):
    with pytest.raises(UserError, match="start learning rate"):
        lr_find(colours, tiny_config(), start=1.0, end=0.1)
    with pytest.raises(UserError, match="at least 10 steps"):
        lr_find(colours, tiny_config(), steps=3)


def test_cli_prints_the_curve_and_a_suggestion_or_why_not(tmp_path):
    zip_path = make_zip(tmp_path / "c.zip", class_entries(per_class=6))
    args = ["lr-find", zip_path, "--weights", "none", "--image-size", "32", "--head", "gap", "--unfreeze", "3",
            "--optimizer", "adam", "--batch-size", "4", "--precision", "float32", "--steps", "20"]  # fmt: skip
    result = run_cli(*args, env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "learning rate   loss (smoothed)" in result.stdout
    assert "suggested learning rate:" in result.stdout or "no suggestion:" in result.stdout
    bad = run_cli(*args[:-1], "3", env_dir=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: The range test needs at least 10 steps (got 3)."]
