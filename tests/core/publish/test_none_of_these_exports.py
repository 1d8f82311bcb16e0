"""The "none of these" score in every export of a run that has one: each file answers the app's score in its own
runtime, the SavedModel's signatures say "none of these" as the app does, the parity check, the deployment report,
the model card and the bundle's steps and examples carry it. (A run without one exports as before: test_export.py.)

The module's run is the suite's usual one (VGG16, random weights, 32 px, one epoch) with enough validation images
(12: ``core.model.ood.MIN_IMAGES`` is 10) for a threshold.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import class_entries, make_zip
from PIL import Image

FORMATS = "saved_model,litert,litert-int8,onnx"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run with a fitted "none of these" and its bundle, each made once for the module."""
    base = tmp_path_factory.mktemp("none-of-these-exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(base / "keras"))
        from core.config import TrainConfig
        from core.data.dataset import load_dataset
        from core.publish.export import export_run
        from core.train.training import train

        entries = class_entries(classes=("red", "green", "blue"), per_class=16)
        ds = load_dataset(make_zip(base / "colours.zip", entries), base / "work")
        config = TrainConfig(weights="none", image_size=32, epochs=1, batch_size=16, validation_split=0.25)
        result = train(ds, config, base / "runs" / "20200101-000000-colours-ood0")
        assert result.status == "completed"
        bundle = export_run(result.run_dir, base / "exports", formats=FORMATS)
    return SimpleNamespace(run_dir=result.run_dir, bundle=bundle, path=bundle.path)


def noise_png(seed: int, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def squares_of(run, files: list[bytes]) -> np.ndarray:
    from core.model.inputs import load_image

    return np.stack([load_image(data, run.config.image_size, run.config.resize) for data in files])


def validation_files(run_dir: Path) -> list[bytes]:
    split = json.loads((run_dir / "split.json").read_text())
    return [(Path(split["root"]) / rel).read_bytes() for rel in split["val"]]


def relative(got, app, threshold: float) -> np.ndarray:
    return np.abs(np.asarray(got, np.float64) - app) / np.maximum(max(1.0, threshold), np.abs(app))


def test_each_runtime_answers_the_apps_score_and_the_same_flags(exported):
    from core.model.predict import load_run
    from core.publish.bundles import BYTES_TARGET, PIXELS_TARGET, SCORE_BYTES_TARGET, SCORE_PIXELS_TARGET
    from core.publish.runtimes import SavedModelRuntime, batched, open_runtime

    run = load_run(exported.run_dir)
    assert run.ood is not None and run.ood.validation_images == 12
    files = validation_files(exported.run_dir) + [noise_png(s) for s in range(4)]
    squares = squares_of(run, files)
    app, app_scores, app_flags = run.outputs(squares)
    assert app_flags[-4:].all() and not app_flags.all()  # noise is "none of these"; most of the classes' images not
    threshold = run.ood.threshold
    for fmt, file in (("saved_model", "savedmodel"), ("litert", "model.tflite"), ("onnx", "model.onnx")):
        probs, got = batched(open_runtime(fmt, exported.path / file), squares)
        assert got is not None and got.shape == (len(files),) and got.dtype == np.float32, fmt
        assert relative(got, app_scores, threshold).max() <= SCORE_PIXELS_TARGET, fmt
        assert np.array_equal(run.ood.flags(got), app_flags), fmt
        assert np.abs(probs - app).max() <= PIXELS_TARGET, fmt
    probs, got = batched(open_runtime("litert-int8", exported.path / "model_int8.tflite"), squares)
    assert probs.shape == app.shape and got.shape == (len(files),) and got.dtype == np.float32  # dequantised
    rt = SavedModelRuntime(exported.path / "savedmodel")
    probs, got = rt.from_bytes(files)
    assert (
        relative(got, app_scores, threshold).max() <= SCORE_BYTES_TARGET and np.abs(probs - app).max() <= BYTES_TARGET
    )
    assert np.array_equal(run.ood.flags(got), app_flags)


def test_the_savedmodels_signatures_say_none_of_these_as_the_app_does(exported):
    import tensorflow as tf

    from core.model.predict import load_run, predict

    run = load_run(exported.run_dir)
    loaded = tf.saved_model.load(str(exported.path / "savedmodel"))
    own = validation_files(exported.run_dir)
    app = predict(run, [noise_png(10), *own], threshold=None)
    assert app[0].none_of_these and app[0].answer == "none of these"
    out = loaded.signatures["serving_default"](images=tf.constant([noise_png(10), *own]))
    assert out["none_of_these"].dtype == tf.bool and out["none_of_these_score"].dtype == tf.float32
    assert list(out["none_of_these"].numpy()) == [p.none_of_these for p in app]
    assert float(out["none_of_these_score"][0]) == pytest.approx(app[0].score, rel=1e-4)
    assert [x.decode() for x in out["label"].numpy()] == [p.top[0][0] for p in app]  # the classes as before
    square = squares_of(run, [noise_png(10)])
    for name, given in (("square", square), ("pixels", square)):
        answer = loaded.signatures[name](**{name: tf.constant(given)})
        assert bool(answer["none_of_these"][0]) and set(answer) >= {"label", "probabilities", "none_of_these_score"}


def test_parity_report_card_steps_and_examples_carry_it(exported):
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    from core.model import ood

    state = ood.load(exported.run_dir)
    parity = json.loads((exported.path / "parity.json").read_text())
    assert parity["passed"] and exported.bundle.passed
    assert parity["none_of_these"]["threshold"] == pytest.approx(state.threshold) and parity["none_of_these"]["rate"]
    assert parity["targets"]["score, decoded pixels"] == 1e-4 and parity["targets"]["score, encoded bytes"] == 1e-2
    checks = {(c["format"], c["input"]): c for c in parity["checks"]}
    for key, c in checks.items():
        if key[0] == "litert-int8":  # reported, no target: its score is full-integer arithmetic
            assert c["score_target"] is None and c["passed"] and 0 <= c["none_of_these_agreement"] <= 1
            continue
        assert c["none_of_these_agreement"] == 1.0 and not c["score_disagreements"], c
        assert c["max_score_diff"] <= c["score_target"] == (1e-2 if key[1] == "encoded bytes" else 1e-4)
    markdown = (exported.path / "PARITY.md").read_text()
    assert "none-of-these agreement | largest score difference | score target |" in markdown
    assert "| onnx | square uint8 | 21 | 100.0% |" in markdown

    report = json.loads((exported.path / "report.json").read_text())
    assert report["none_of_these"]["threshold"] == pytest.approx(state.threshold)
    rows = {r["format"]: r for r in report["formats"]}
    assert rows["onnx"]["none_of_these_agreement"] == rows["litert"]["none_of_these_agreement"] == 1.0
    assert 0 <= rows["litert-int8"]["none_of_these_agreement"] <= 1
    assert "None-of-these agreement |" in (exported.path / "REPORT.md").read_text()
    card = (exported.path / "MODEL_CARD.md").read_text()
    assert "## None of these" in card and f"{state.threshold:,.6g}" in card and "Mahalanobis" in card
    assert f"{state.validation_flagged:.1%} of 12" in card and "None-of-these agreement" in card

    steps = json.loads((exported.path / "preprocessing.json").read_text())
    assert steps["none_of_these_threshold"] == pytest.approx(state.threshold)
    assert "none_of_these_score" in steps["outputs"]["onnx"] and "none_of_these" in steps["outputs"]["savedmodel"]
    notes = json.loads((exported.path / "none_of_these.json").read_text())
    assert notes["threshold"] == steps["none_of_these_threshold"] and notes["rate"] == state.rate
    graph = onnx.load(str(exported.path / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["probabilities", "none_of_these_score"]
    for file in ("model.tflite", "model_int8.tflite"):
        outputs = Interpreter(model_path=str(exported.path / file)).get_signature_list()["serving_default"]["outputs"]
        assert sorted(outputs) == ["none_of_these_score", "probabilities"], file


def test_the_examples_say_none_of_these_for_noise(exported, tmp_path):
    bundle = tmp_path / "bundle"
    for name in ("model.tflite", "model.onnx", "labels.txt", "preprocessing.json", "examples"):
        source = exported.path / name
        target = bundle / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            import shutil

            shutil.copytree(source, target)
        else:
            target.write_bytes(source.read_bytes())
    Image.open(io.BytesIO(noise_png(20))).convert("RGB").save(bundle / "photo.jpg", quality=95)
    for script in ("litert.py", "onnx.py"):
        done = subprocess.run([sys.executable, f"examples/{script}"], cwd=bundle, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.splitlines()[-1].startswith("none of these "), (script, done.stdout)
