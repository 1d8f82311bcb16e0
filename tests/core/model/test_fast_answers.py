"""Answering in bfloat16 where that cannot change the answer: the same classes as float32, images near a tie
answered again in float32, evaluation in float32 throughout."""

from __future__ import annotations

import numpy as np
import pytest

from core.model.build import fold_temperature
from tests.conftest import COLORS, jpeg_bytes


@pytest.fixture
def run(trained_run, monkeypatch):
    from core.model import predict as predicting

    monkeypatch.setenv("CLASSIFIER_ANSWER_PRECISION", "bfloat16")
    predicting.forget(trained_run)
    loaded = predicting.load_run(trained_run)
    # One epoch from random weights leaves the three probabilities near a third each, every image a near tie; a
    # low temperature (in memory only: the run is loaded again afterwards) spreads them as a trained head does.
    fold_temperature(loaded.model, 0.01)
    yield loaded
    predicting.forget(trained_run)


def _images(tmp_path, n: int = 24) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(list(COLORS.values())[i % len(COLORS)], seed=i))
        paths.append(str(path))
    return paths


def test_fast_answers_are_float32_s_answers_and_near_ties_are_answered_in_float32(run, tmp_path):
    from core.model.predict import MARGIN, predict

    paths = _images(tmp_path)
    fast = predict(run, paths, top_k=len(run.classes), threshold=None)
    exact = predict(run, paths, top_k=len(run.classes), threshold=None, exact=True)
    assert run.answered_fast + run.rechecked == len(paths) and run.answered_fast > 0
    for f, e in zip(fast, exact, strict=True):
        assert f.answer == e.answer and f.top[0][0] == e.top[0][0]
        got, want = dict(f.top), dict(e.top)
        gap = e.top[0][1] - e.top[1][1]
        if gap < MARGIN / 2:  # too close for bfloat16 to call: these are float32's own numbers
            assert got == want
        else:
            assert all(abs(got[c] - want[c]) < MARGIN / 2 for c in want)


def test_a_margin_no_answer_clears_is_answered_in_float32_exactly(run, tmp_path, monkeypatch):
    from core.model import predict as predicting

    monkeypatch.setattr(predicting, "MARGIN", 2.0)  # no probability gap reaches it: float32 answers everything
    paths = _images(tmp_path, 6)
    fast = predicting.predict(run, paths, top_k=3, threshold=None)
    exact = predicting.predict(run, paths, top_k=3, threshold=None, exact=True)
    assert run.rechecked == len(paths) and run.answered_fast == 0
    assert [p.top for p in fast] == [p.top for p in exact]


def test_the_not_sure_threshold_sends_answers_near_it_to_float32(run, tmp_path):
    from core.model.predict import predict

    paths = _images(tmp_path, 6)
    exact = predict(run, paths, top_k=1, threshold=None, exact=True)
    near = float(np.median([p.top[0][1] for p in exact]))  # half the images sit within MARGIN of it or above
    fast = predict(run, paths, top_k=1, threshold=near)
    assert [p.answer for p in fast] == [p.answer for p in predict(run, paths, top_k=1, threshold=near, exact=True)]
    assert run.rechecked >= 1


def test_float32_answering_never_builds_the_twin(trained_run, tmp_path, monkeypatch):
    from core.model import predict as predicting

    monkeypatch.setenv("CLASSIFIER_ANSWER_PRECISION", "float32")
    predicting.forget(trained_run)
    run = predicting.load_run(trained_run)
    predicting.predict(run, _images(tmp_path, 2), threshold=None)
    assert run._fast is None and run.answered_fast == run.rechecked == 0
    predicting.forget(trained_run)


def test_the_setting_reads_auto_float32_and_bfloat16_and_nothing_else():
    from core.settings import from_env

    assert from_env({"CLASSIFIER_ANSWER_PRECISION": "BFloat16"}).answer_precision == "bfloat16"
    assert from_env({"CLASSIFIER_ANSWER_PRECISION": "float32"}).answer_precision == "float32"
    assert from_env({"CLASSIFIER_ANSWER_PRECISION": "float16"}).answer_precision == "auto"
    assert from_env({}).answer_precision == "auto"
