"""The "none of these" answer in a real run: fitted after training on the features already in memory, saved before the
marker, and used everywhere an answer is given (predict, the CLI, the API and its review queue, evaluation).

One run is trained for the module on a saved dataset of two kinds of photo-like images (sunsets: smooth warm
gradients with soft suns; forests: green noise with dark trunks), VGG16 from random weights at 64 px, gap head, with
an ``__other__`` folder of drawn digits beside the class folders. The images it must call "none of these" are of
another structure altogether: digits drawn on white, uniform noise.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import encoded, make_zip, tiny_config
from PIL import Image, ImageDraw, ImageFilter

from core.model import ood
from core.model.predict import NONE_OF_THESE, load_run, predict
from core.train.training import train
from core.workspace import runs

SIZE = (96, 72)


def sunset(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = SIZE
    t = np.linspace(0, 1, h)[:, None, None]
    top, bottom = (
        np.array([250, 150, 40]) + rng.integers(-20, 20, 3),
        np.array([120, 40, 110]) + rng.integers(-20, 20, 3),
    )
    sky = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)) + rng.normal(0, 4, (h, w, 3))
    im = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(6, 18))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, int(rng.integers(180, 240)), 120))
    return im.filter(ImageFilter.GaussianBlur(2))


def forest(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = SIZE
    leaves = np.array([40, 110, 50]) + rng.integers(-15, 15, 3) + rng.normal(0, 10, (h, w, 3))
    im = Image.fromarray(np.clip(leaves, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(8):
        x = int(rng.integers(0, w))
        trunk = (int(rng.integers(60, 100)), int(rng.integers(40, 70)), 20)
        draw.rectangle((x, 0, x + int(rng.integers(3, 8)), h), fill=trunk)
    return im.filter(ImageFilter.GaussianBlur(1))


def digits(seed: int) -> Image.Image:
    """Black digits drawn on white: nothing like either class."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", SIZE, (255, 255, 255))
    where = (int(rng.integers(5, 50)), int(rng.integers(5, 30)))
    ImageDraw.Draw(im).text(where, str(int(rng.integers(10, 100))), fill=(0, 0, 0), font_size=int(rng.integers(24, 40)))
    return im


def noise(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))


def png(make, seeds) -> list[bytes]:
    return [encoded(make(s)) for s in seeds]


def photo_zip(path: Path, per_class: int = 32, other: int = 12) -> Path:
    entries = {f"sunset/{i}.png": encoded(sunset(i)) for i in range(per_class)}
    entries |= {f"forest/{i}.png": encoded(forest(1000 + i)) for i in range(per_class)}
    entries |= {f"__other__/{i}.png": encoded(digits(2000 + i)) for i in range(other)}
    return make_zip(path, entries)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The module's run, trained on the saved dataset (its workspace lives as long as the module), and the models
    the penultimate features were read from."""
    base = tmp_path_factory.mktemp("none-of-these")
    seen = []
    real = ood.features_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(base / "keras"))
        mp.setenv("CLASSIFIER_WORK_DIR", str(base / "work"))
        mp.setattr(ood, "features_model", lambda model: seen.append(model) or real(model))
        from core.workspace.datasets import open_dataset, save_zip

        zip_path = photo_zip(base / "photos.zip")
        ds = open_dataset(save_zip(zip_path).id)
        result = train(ds, tiny_config(image_size=64, epochs=3, validation_split=0.3),
                       base / "runs" / "20240101-000000-photos-0001")  # fmt: skip
    assert result.status == "completed"
    return SimpleNamespace(run=result.run_dir, ds=ds, result=result, seen=seen, zip=zip_path)


def validation_files(trained) -> list[str]:
    return [str(trained.ds.root / p) for p in runs.read_json(trained.run / "split.json")["val"]]


def flagged(run, images) -> float:
    results = predict(run, images)
    assert all(p.ok and p.none_of_these is not None for p in results)
    assert all((p.answer == NONE_OF_THESE) == p.none_of_these for p in results)
    return float(np.mean([p.none_of_these for p in results]))


def test_the_other_folder_is_no_class_and_a_saved_dataset_keeps_its_images(trained):
    ds = trained.ds
    assert ds.classes == ["forest", "sunset"] and ds.report.other == 12
    assert sorted(ds.other) == sorted(f"__other__/{i}.png" for i in range(12))
    assert all((ds.root / p).is_file() for p in ds.other)  # kept on the server with the images
    assert not any(it.path.startswith("__other__/") for it in ds.items)


def test_training_fits_it_on_the_cached_features_and_saves_it_before_the_marker(trained):
    metrics, run = trained.result.metrics, trained.run
    assert metrics["path"] == "cached features"
    # read through the trainable tail from the frozen prefix's features in memory (the prefix ends after the gap
    # head's pooling, at its dropout), not from 64x64 images again
    assert [tuple(m.inputs[0].shape[1:]) for m in trained.seen] == [(512,)]
    state = ood.load(run)
    assert state is not None and state.feature_size == 512 and state.classes == ["forest", "sunset"]
    assert state.validation_images == metrics["val_images"] >= ood.MIN_IMAGES
    assert state.train_images == metrics["train_images"]
    assert metrics["none_of_these"]["threshold"] == pytest.approx(state.threshold, abs=1e-4)
    assert metrics["none_of_these"]["rate"] == 0.05 and state.validation_flagged <= 0.1
    assert [r["class"] for r in state.held_out] == ["forest", "sunset"]
    marker = (run / runs.MARKER).stat().st_mtime_ns
    assert (run / ood.FILE).stat().st_mtime_ns <= marker and (run / ood.ARRAYS).stat().st_mtime_ns <= marker


def test_unrelated_images_are_none_of_these_and_few_of_its_own(trained):
    run = load_run(trained.run)
    assert run.ood is not None and run.ood.threshold == ood.load(trained.run).threshold
    # Through predict (the saved model in float32, the score from the Keras layer), as training thresholded them.
    assert flagged(run, validation_files(trained)) <= 0.10
    assert flagged(run, png(sunset, range(500, 520)) + png(forest, range(1500, 1520))) <= 0.2
    assert flagged(run, png(digits, range(3000, 3020))) >= 0.9
    assert flagged(run, png(noise, range(20))) >= 0.9


def test_predict_scores_in_the_same_pass_and_a_flag_comes_before_not_sure(trained):
    run = load_run(trained.run)
    p, q = predict(run, png(digits, [3100]) + png(sunset, [600]), threshold=1.01)  # nothing is "sure"
    assert p.none_of_these and p.answer == NONE_OF_THESE and p.score > p.score_threshold == run.ood.threshold
    assert not q.none_of_these and q.answer == "not sure" and q.score <= q.score_threshold
    assert p.top and p.top[0][0] in run.classes  # the closest classes are still given


def test_evaluation_scores_the_other_images_the_made_ones_and_the_held_out_classes(trained):
    from core.evaluate.evaluation import evaluate_run

    ev = evaluate_run(trained.run, trained.ds)
    report = ev.none_of_these
    assert report["available"] and report["threshold"] == pytest.approx(ood.load(trained.run).threshold)
    assert report["inside"]["images"] == ev.images and report["inside"]["flagged"] <= 0.1
    sources = {s["source"]: s for s in report["sources"]}
    assert list(sources) == ["other", "noise", "flat", "held_out"]
    assert sources["other"]["images"] == 12 and len(sources["other"]["scores"]) == 12
    for name in ("other", "noise"):
        assert sources[name]["flagged"] >= 0.9 and sources[name]["auroc"] > 0.95, name
    assert sources["held_out"]["images"] == sum(r["images"] for r in report["held_out"])
    assert 0 <= sources["flat"]["auroc"] <= 1
    assert json.loads((trained.run / "evaluation.json").read_text())["none_of_these"]["sources"][0]["source"] == "other"


def test_the_cli_says_none_of_these_in_words_and_in_json(trained, tmp_path, capsys):
    from core.cli.main import main

    strange, own = tmp_path / "strange.png", tmp_path / "own.png"
    strange.write_bytes(png(digits, [3200])[0])
    own.write_bytes(png(forest, [1600])[0])
    capsys.readouterr()
    assert main(["predict", str(trained.run), str(strange), str(own)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{strange}: none of these (unlike every class: score ")
    assert out[1].startswith(f"{own}: ") and "none of these" not in out[1]
    assert main(["predict", str(trained.run), str(strange), str(own), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["none_of_these"] for r in rows] == [True, False]
    assert rows[0]["answer"] == NONE_OF_THESE and rows[1]["answer"] in ("forest", "sunset", "not sure")
    assert rows[0]["none_of_these_score"] > rows[0]["none_of_these_threshold"] >= rows[1]["none_of_these_score"]
    assert main(["evaluate", str(trained.run)]) == 0  # its saved split, found again in the dataset's folder
    out = capsys.readouterr().out
    assert "none of these above score " in out and "“other” images (the __other__ folder): " in out
    assert "uniform noise (made): 100% of 32 flagged, AUROC " in out


def test_the_api_answers_none_of_these_and_the_review_queue_puts_it_first(trained):
    from core.api.batching import Batcher
    from core.api.predicting import answer
    from core.workspace import keys, review
    from core.workspace.datasets import save_zip

    saved = save_zip(trained.zip)  # the same zip in this test's workspace: the same dataset id the run names
    info = runs.read_run(trained.run)
    assert info.dataset_id == saved.id
    key = keys.ApiKey(id="k1", name="test", run_id=info.id, scope_owner="", created_by="", created=0.0, expires=None,
                      revoked=None, last_used=None, uses=0, store=True)  # fmt: skip
    own = trained.ds.root / runs.read_json(trained.run / "split.json")["train"][0]  # one it learnt from
    files = [("own.png", own.read_bytes()), ("digits.png", png(digits, [3300])[0])]
    batcher = Batcher()
    try:
        answers, stored, note = asyncio.run(answer(batcher, info, key, files))
    finally:
        batcher.close()
    assert [a["none_of_these"] for a in answers] == [False, True] and stored == 2 and note is None
    assert [it.name for it in review.queue(saved.id)] == ["digits.png", "own.png"]  # none of these first
    assert review.queue(saved.id)[0].none_of_these is True


def test_a_run_without_the_record_cannot_say_anywhere(trained, tmp_path, capsys):
    old = tmp_path / "runs" / "20230101-000000-old-0001"
    shutil.copytree(trained.run, old)
    for name in (ood.FILE, ood.ARRAYS):
        (old / name).unlink()
    run = load_run(old)
    assert run.ood is None and "before" in ood.reason(old)
    p = predict(run, png(digits, [3400]), threshold=None)[0]
    assert p.none_of_these is None and p.score is None and p.answer in run.classes  # answered as before
    probs, scores, flags = run.outputs(np.zeros((1, 64, 64, 3), np.uint8))
    assert probs.shape == (1, 2) and scores is None and flags is None
    from core.cli.main import main

    image = tmp_path / "x.png"
    image.write_bytes(png(digits, [3400])[0])
    capsys.readouterr()
    assert main(["predict", str(old), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["none_of_these"] is None


def test_a_run_with_the_rate_at_zero_or_too_few_validation_images_says_why_not(tmp_path, colour_zip):
    from core.data.dataset import load_dataset

    ds = load_dataset(colour_zip, tmp_path / "work")  # 10 images a class
    off = train(ds, tiny_config(epochs=1, none_of_these_rate=0.0, validation_split=0.5), tmp_path / "off")
    assert ood.load(off.run_dir) is None and "turned it off" in ood.reason(off.run_dir)
    assert "none_of_these" not in off.metrics and not (off.run_dir / ood.ARRAYS).exists()
    few = train(ds, tiny_config(epochs=1), tmp_path / "few")  # 2 validation images
    assert ood.load(few.run_dir) is None and "only 2 validation images" in ood.reason(few.run_dir)
    assert predict(load_run(few.run_dir), [str(ds.root / ds.items[0].path)])[0].none_of_these is None


def test_end_to_end_mixed_precision_training_reads_the_features_from_the_images_in_float32(tmp_path, monkeypatch):
    from core.data.dataset import load_dataset

    seen, real = [], ood.features_model
    monkeypatch.setattr(ood, "features_model", lambda model: seen.append(model) or real(model))
    ds = load_dataset(photo_zip(tmp_path / "photos.zip", per_class=16, other=0), tmp_path / "work")
    config = tiny_config(image_size=48, epochs=1, validation_split=0.4, augment_flip=True, precision="bfloat16")
    result = train(ds, config, tmp_path / "run")
    assert result.metrics["path"] == "end to end" and result.metrics["precision"] == "bfloat16"
    assert [tuple(m.inputs[0].shape[1:]) for m in seen] == [(48, 48, 3)]  # the whole model, on the images
    state = ood.load(result.run_dir)
    assert state is not None and state.validation_images == result.metrics["val_images"]
    run = load_run(result.run_dir)  # answers in float32, as the features were read
    assert flagged(run, png(noise, range(10))) >= 0.9
