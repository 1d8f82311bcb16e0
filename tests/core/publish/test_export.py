"""Exports of a real run (VGG16, random weights, 32 px), each loaded in its own runtime and compared with the app."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIVE = "saved_model,litert,litert-fp16,litert-int8,onnx"


@pytest.fixture(scope="module")
def bundle(trained_run, tmp_path_factory):
    """Every format of the module's run, exported once (ONNX conversion alone takes most of a minute)."""
    from core.publish.export import export_run

    return export_run(trained_run, tmp_path_factory.mktemp("exports"), formats=FIVE)


def photo(w: int, h: int, fmt: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (3, 3, len(mode)), dtype=np.uint8)
    im = Image.fromarray(base.squeeze() if mode == "L" else base, mode).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


SHAPES = [(64, 48), (48, 64), (33, 200), (500, 20), (32, 32), (7, 9), (640, 480)]


def test_every_format_agrees_with_the_app_on_the_runs_validation_images(bundle, trained_run):
    report = json.loads((bundle.path / "parity.json").read_text())
    checks = {(c["format"], c["input"]): c for c in report["checks"]}
    assert set(checks) == {
        ("saved_model", "decoded pixels"), ("saved_model", "encoded bytes"), ("litert", "square uint8"),
        ("litert-fp16", "square uint8"), ("litert-int8", "square uint8"), ("onnx", "square uint8"),
    }  # fmt: skip
    split = json.loads((trained_run / "split.json").read_text())
    assert "validation images" in report["images"] and all(
        c["images"] == len(split["val"]) + 9 for c in checks.values()
    )
    for key, c in checks.items():
        if key[0] in ("litert-fp16", "litert-int8"):
            assert c["target"] is None and c["passed"]  # reported, not held to the float32 target
            continue
        assert c["top1_agreement"] == 1.0, c["disagreements"]
        assert c["max_abs_diff"] <= (1e-3 if key[1] == "encoded bytes" else 1e-5), c
        assert c["passed"] and not c["disagreements"]
    assert report["passed"] and bundle.passed
    assert "| onnx | square uint8 |" in (bundle.path / "PARITY.md").read_text()


def test_the_bundle_holds_the_models_labels_steps_card_and_examples(bundle, trained_run):
    files = set(bundle.files)
    for name in ("model.keras", "model.tflite", "model_fp16.tflite", "model_int8.tflite", "model.onnx", "labels.txt",
                 "preprocessing.json", "parity.json", "PARITY.md", "report.json", "REPORT.md", "MODEL_CARD.md",
                 "model_card.html", "bundle.json",
                 "savedmodel/saved_model.pb", "examples/savedmodel.py", "examples/tensorflow_serving.md",
                 "examples/litert.py", "examples/onnx.py"):  # fmt: skip
        assert name in files, name
    classes = json.loads((trained_run / "classes.json").read_text())
    assert (bundle.path / "labels.txt").read_text().splitlines() == classes
    steps = json.loads((bundle.path / "preprocessing.json").read_text())
    assert steps["size"] == 32 and steps["resize_strategy"] == "crop" and "antialias" in steps["geometry"][1]
    marker = json.loads((bundle.path / "bundle.json").read_text())
    import hashlib

    assert marker["sha256"]["model.onnx"] == hashlib.sha256((bundle.path / "model.onnx").read_bytes()).hexdigest()
    assert marker["versions"]["onnxruntime"]
    assert bundle.files["model_int8.tflite"] < bundle.files["model.tflite"] / 3  # int8 weights: a quarter the size
    assert bundle.files["model_fp16.tflite"] < bundle.files["model.tflite"] * 0.6  # float16: half
    savedmodel = sum(size for name, size in bundle.files.items() if name.startswith("savedmodel/"))
    assert savedmodel < 1.1 * bundle.files["model.keras"]  # each weight stored once

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(bundle.path / "model.onnx")).metadata_props}
    assert json.loads(meta["labels"]) == classes


def on_disk(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def test_the_deployment_report_has_one_row_per_format_each_file_loading_in_its_runtime(bundle, trained_run):
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from core.publish.runtimes import all_threads

    report = json.loads((bundle.path / "report.json").read_text())
    assert report == bundle.deployment
    assert [r["format"] for r in report["formats"]] == FIVE.split(",")
    classes = json.loads((trained_run / "classes.json").read_text())
    one = np.zeros((1, 32, 32, 3), np.uint8)
    for row in report["formats"]:
        path = bundle.path / row["file"]
        assert row["bytes"] > 0 and row["bytes"] == on_disk(path), row["format"]
        assert [t["threads"] for t in row["latency"]] == [1, all_threads()]
        for t in row["latency"]:
            assert t["runs"] >= 20 and len(t["times_ms"]) == t["runs"] and t["p50_ms"] > 0, (row["format"], t)
            assert t["p50_ms"] == pytest.approx(float(np.median(t["times_ms"])), rel=1e-3)
        if row["format"] == "saved_model":
            assert "fresh process" in row["latency"][0]["where"] and row["input"] == "encoded bytes"
            probs = tf.saved_model.load(str(path)).signatures["square"](square=tf.constant(one))["probabilities"]
        elif row["format"] == "onnx":
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            probs = session.run(None, {session.get_inputs()[0].name: one})[0]
        else:
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
            assert interpreter.get_input_details()[0]["dtype"] == np.uint8  # the normalisation is inside
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], one)
            interpreter.invoke()
            out = interpreter.get_output_details()[0]
            assert out["dtype"] == np.float32  # float probabilities out, int8 included
            probs = interpreter.get_tensor(out["index"])
        assert np.asarray(probs).shape == (1, len(classes)) and abs(float(np.sum(probs)) - 1) < 0.02
        assert [c["class"] for c in row["per_class"]] == classes
    assert "training images" in report["representative"]
    assert report["images"] == "3 validation images"
    assert "| litert-int8 |" in (bundle.path / "REPORT.md").read_text()
    card = (bundle.path / "MODEL_CARD.md").read_text()
    assert "## Deployment" in card and "| litert-fp16 |" in card


def ece_15(probs: np.ndarray, labels: np.ndarray) -> float:
    """Expected calibration error as Guo et al. define it: 15 equal-width confidence bins, weighted by images."""
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == labels
    total = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        inside = (conf > low) & (conf <= high) if b else (conf >= 0) & (conf <= high)
        if inside.any():
            total += inside.sum() * abs(conf[inside].mean() - right[inside].mean())
    return total / len(labels)


def test_the_int8_rows_numbers_are_those_of_its_own_file_on_the_validation_images(bundle, trained_run):
    """Agreement, accuracy per class and ECE recomputed here from model_int8.tflite itself, run with ai_edge_litert
    on the run's validation images, against the app's answers (core.model.predict)."""
    from ai_edge_litert.interpreter import Interpreter

    from core.model.inputs import load_image
    from core.model.predict import load_run, predict

    run = load_run(trained_run)
    split = json.loads((trained_run / "split.json").read_text())
    root, files, labels = Path(split["root"]), split["val"], np.array(split["labels"]["val"])
    squares = np.stack([load_image(str(root / f), 32, "crop") for f in files])
    interpreter = Interpreter(model_path=str(bundle.path / "model_int8.tflite"))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(squares.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], squares)
    interpreter.invoke()
    probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).astype(np.float64)
    app = [p.top[0][0] for p in predict(run, [str(root / f) for f in files], top_k=1, threshold=None)]
    mine = [run.classes[k] for k in probs.argmax(axis=1)]

    report = json.loads((bundle.path / "report.json").read_text())
    (row,) = [r for r in report["formats"] if r["format"] == "litert-int8"]
    assert row["file"] == "model_int8.tflite" and row["images"] == len(files)
    assert row["agreement"] == pytest.approx(np.mean([a == b for a, b in zip(app, mine, strict=True)]))
    right = probs.argmax(axis=1) == labels
    assert row["accuracy"] == pytest.approx(right.mean())
    for k, c in enumerate(run.classes):
        (got,) = [x for x in row["per_class"] if x["class"] == c]
        assert got["images"] == int((labels == k).sum()) and got["accuracy"] == pytest.approx(right[labels == k].mean())
    assert row["ece"] == pytest.approx(ece_15(probs, labels), abs=1e-6)
    app_right = np.array([a == run.classes[k] for a, k in zip(app, labels, strict=True)])
    assert report["app"]["accuracy"] == pytest.approx(app_right.mean())


def test_savedmodel_bytes_signature_names_the_class_for_jpeg_and_png(bundle, trained_run):
    import tensorflow as tf

    from core.model.predict import load_run, predict

    run = load_run(trained_run)
    serve = tf.saved_model.load(str(bundle.path / "savedmodel")).signatures["serving_default"]
    files = [photo(w, h, fmt, seed=i) for i, (w, h) in enumerate(SHAPES) for fmt in ("JPEG", "PNG")]
    files += [photo(50, 70, "PNG", "RGBA"), photo(50, 30, "PNG", "L"), photo(40, 40, "GIF", "RGB")]
    files += [exif_jpeg(o, "MM", 90, 40) for o in (3, 6, 8)]  # phone photos stored sideways
    out = serve(images=tf.constant(files))
    app = predict(run, files, top_k=len(run.classes), threshold=None)
    labels = [x.decode() for x in out["label"].numpy()]
    assert labels == [p.top[0][0] for p in app]
    assert set(labels) <= set(run.classes)
    for row, p in zip(out["probabilities"].numpy(), app, strict=True):
        expected = np.array([dict(p.top)[c] for c in run.classes])
        assert np.abs(row - expected).max() <= 1e-3
    ranked = [[c.decode() for c in row] for row in out["classes"].numpy()]
    assert all(sorted(r) == sorted(run.classes) for r in ranked)
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 0)


@pytest.mark.parametrize("resize", ["pad", "stretch"])  # crop: the module's bundle and the bytes test
def test_savedmodel_pixels_signature_matches_the_app_for_each_resize_strategy(trained_run, tmp_path, resize):
    """The crop/pad/stretch runs inside the SavedModel; LiteRT takes the square the app made with it. Both agree
    with the app for each strategy, on the same decoded pixels."""
    import tensorflow as tf

    from core.imaging import pillow as images
    from core.model import inputs
    from core.model.predict import load_run
    from core.publish.export import PIXELS_TARGET, export_run

    run_dir = tmp_path / trained_run.name
    shutil.copytree(trained_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "resize": resize}))
    run = load_run(run_dir)
    exported = export_run(run_dir, tmp_path / "out", formats=("savedmodel", "litert"))
    assert exported.passed and len(exported.checks) == 3, [c.to_dict() for c in exported.checks]
    assert json.loads((exported.path / "preprocessing.json").read_text())["resize_strategy"] == resize
    pixels_fn = tf.saved_model.load(str(exported.path / "savedmodel")).signatures["pixels"]
    for i, (w, h) in enumerate(SHAPES):
        data = photo(w, h, "PNG", seed=i)
        decoded = images.decode(data, 32)
        app = run.probabilities(inputs.load_image(data, 32, resize)[None])
        got = pixels_fn(pixels=tf.constant(decoded[None]))["probabilities"].numpy()
        assert np.abs(app - got).max() <= PIXELS_TARGET and app.argmax() == got.argmax(), (w, h)


def test_graph_decoder_reads_jpeg_and_png_as_pillow_does():
    import tensorflow as tf

    from core.imaging import pillow as images
    from core.model import geometry

    for i, (w, h) in enumerate([(640, 480), (300, 900), (31, 17), (2000, 1300)]):
        for fmt in ("JPEG", "PNG"):
            data = photo(w, h, fmt, seed=i)
            for size in (32, 224):  # large JPEGs decode at 1/2, 1/4, 1/8 scale, as Pillow's draft mode does
                assert np.array_equal(geometry.decode(tf.constant(data), size).numpy(), images.decode(data, size))
    rgba = photo(40, 30, "PNG", "RGBA", seed=5)
    assert np.array_equal(geometry.decode(tf.constant(rgba), 32).numpy(), images.decode(rgba, 32))


def exif_jpeg(orientation: int, order: str, w: int = 97, h: int = 41) -> bytes:
    """A JPEG whose EXIF says how to turn it upright, in little- ("II") or big-endian ("MM") TIFF order."""
    import struct

    e = "<" if order == "II" else ">"
    tiff = order.encode() + struct.pack(f"{e}HI", 42, 8) + struct.pack(f"{e}H", 2)
    tiff += struct.pack(f"{e}HHI4s", 0x010F, 2, 4, b"ABC\0") + struct.pack(f"{e}HHIHH", 0x0112, 3, 1, orientation, 0)
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(w, h, "PNG", seed=orientation))).save(buf, "JPEG", exif=b"Exif\0\0" + tiff + bytes(4))
    return buf.getvalue()


def test_graph_decoder_turns_jpegs_upright_by_their_exif_orientation_as_pillow_does():
    """TensorFlow's decoder ignores EXIF orientation: the SavedModel reads it from the header and turns the image."""
    import tensorflow as tf

    from core.imaging import pillow as images
    from core.model import geometry

    decode = tf.function(lambda data: geometry.decode(data, 32))
    for order in ("II", "MM"):
        for orientation in range(1, 9):
            for w, h in [(97, 41), (300, 700)]:  # the second decodes at 1/8 scale, then turns
                data = exif_jpeg(orientation, order, w, h)
                with Image.open(io.BytesIO(data)) as im:
                    assert im.getexif()[0x0112] == orientation
                assert np.array_equal(decode(tf.constant(data)).numpy(), images.decode(data, 32)), (order, orientation)
    damaged = exif_jpeg(6, "II")[:40]  # the header cut inside the Exif segment reads as "no orientation"
    assert int(geometry.exif_orientation(tf.constant(damaged))) == 1


def test_a_missed_target_is_flagged_with_each_image_and_why():
    from core.publish.parity import compare

    app = np.array([[0.6, 0.4], [0.2, 0.8], [0.45, 0.55]], np.float32)
    got = np.array([[0.6, 0.4], [0.7, 0.3], [0.45 - 2e-5, 0.55 + 2e-5]], np.float32)
    check = compare("onnx", "square uint8", ["a", "b", "c"], app, got, ["x", "y"], 1e-5)
    assert not check.passed and check.top1_agreement == pytest.approx(2 / 3)
    assert [d["image"] for d in check.disagreements] == ["b", "c"]
    assert check.disagreements[0]["app"] == "y 0.8000" and check.disagreements[0]["export"] == "x 0.7000"


def test_a_missed_none_of_these_flag_or_score_is_flagged_and_int8_only_reported():
    from core.publish.parity import compare, scores

    app = np.array([[0.6, 0.4], [0.2, 0.8], [0.45, 0.55]], np.float32)
    check = compare("onnx", "square uint8", ["a", "b", "c"], app, app, ["x", "y"], 1e-5)
    app_scores = np.array([10.0, 99.99, 5000.0])  # threshold 100: c is "none of these"
    same = scores(check, ["a", "b", "c"], app_scores, app_scores * (1 + 5e-5), 100.0, 1e-4)
    assert same.passed and same.none_of_these_agreement == 1.0 and same.max_score_diff == pytest.approx(5e-5)
    assert not same.score_disagreements
    # b crosses the threshold by a rounding-sized step: the flag differs, the export misses its target
    flipped = scores(check, ["a", "b", "c"], app_scores, np.array([10.0, 100.001, 5000.0]), 100.0, 1e-4)
    assert not flipped.passed and flipped.none_of_these_agreement == pytest.approx(2 / 3)
    (row,) = flipped.score_disagreements
    assert row["image"] == "b" and row["app"].startswith("a class") and row["export"].startswith("none of these")
    assert "nearer the threshold than the difference" in row["why"]
    far = scores(check, ["a", "b", "c"], app_scores, np.array([10.0, 99.99, 4000.0]), 100.0, 1e-4)
    assert not far.passed and far.none_of_these_agreement == 1.0 and far.max_score_diff == pytest.approx(0.2)
    int8 = compare("litert-int8", "square uint8", ["a", "b", "c"], app, app, ["x", "y"], None)
    reported = scores(int8, ["a", "b", "c"], app_scores, np.array([10.0, 99.0, 80.0]), 100.0, None)
    assert reported.passed and reported.none_of_these_agreement == pytest.approx(2 / 3)
    assert reported.score_disagreements[0]["why"] == "full-integer int8 quantisation"
    missing = scores(check, ["a", "b", "c"], app_scores, None, 100.0, 1e-4)
    assert not missing.passed and missing.none_of_these_agreement == 0.0
    assert scores(check, ["a", "b", "c"], None, None, 0.0, 1e-4) == check  # the run cannot say: nothing to compare


def test_a_run_that_cannot_say_none_of_these_exports_its_one_output_as_before(bundle, trained_run):
    import onnx
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from core.model import ood
    from core.publish.runtimes import open_runtime

    assert ood.load(trained_run) is None and "only 3 validation images" in ood.reason(trained_run)
    assert len(onnx.load(str(bundle.path / "model.onnx")).graph.output) == 1
    assert len(Interpreter(model_path=str(bundle.path / "model.tflite")).get_output_details()) == 1
    square = tf.saved_model.load(str(bundle.path / "savedmodel")).signatures["square"]
    assert "none_of_these_score" not in square.structured_outputs and "probabilities" in square.structured_outputs
    one = np.zeros((2, 32, 32, 3), np.uint8)
    for fmt, file in (("saved_model", "savedmodel"), ("litert-int8", "model_int8.tflite"), ("onnx", "model.onnx")):
        probs, scores = open_runtime(fmt, bundle.path / file).outputs(one)
        assert probs.shape == (2, 3) and scores is None, fmt
    parity = json.loads((bundle.path / "parity.json").read_text())
    assert parity["none_of_these"] is None and "score, decoded pixels" not in parity["targets"]
    assert all(c["none_of_these_agreement"] is None and c["score_target"] is None for c in parity["checks"])
    assert "none-of-these" not in (bundle.path / "PARITY.md").read_text()
    report = json.loads((bundle.path / "report.json").read_text())
    assert report["none_of_these"] is None and all("none_of_these_agreement" not in r for r in report["formats"])
    steps = json.loads((bundle.path / "preprocessing.json").read_text())
    assert steps["none_of_these_threshold"] is None and "none_of_these.json" not in bundle.files
    assert not any("none_of_these" in (bundle.path / "examples" / f).read_text() for f in ("litert.py", "onnx.py"))
    assert (
        "This run cannot answer “none of these”: only 3 validation images"
        in (bundle.path / "MODEL_CARD.md").read_text()
    )


def test_user_errors_are_sentences(trained_run, tmp_path):
    from core.publish.export import export_run
    from core.util.errors import UserError

    with pytest.raises(UserError, match="Unknown export format"):
        export_run(trained_run, tmp_path, formats=["pickle"])
    with pytest.raises(UserError):
        export_run(tmp_path / "no-such-run", tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="Cannot write to"):
        export_run(trained_run, blocker / "inside", formats=["litert"])
    (tmp_path / "out" / trained_run.name).mkdir(parents=True)
    (tmp_path / "out" / trained_run.name / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an export"):
        export_run(trained_run, tmp_path / "out", formats=["litert"])
    assert (tmp_path / "out" / trained_run.name / "mine.txt").read_text() == "keep me"
    damaged = tmp_path / "damaged" / trained_run.name
    shutil.copytree(trained_run, damaged)
    (damaged / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot be loaded"):
        export_run(damaged, tmp_path / "out2", formats=["litert"])
    assert not any((tmp_path / "out2").glob("*/model.tflite"))


def test_cli_export_prints_the_parity_report_and_writes_the_bundle(trained_run, tmp_path, capsys):
    from core.cli.main import main

    assert main(["export", str(trained_run), "--format", "litert", "--out", str(tmp_path), "--images", "2"]) == 0
    out, err = capsys.readouterr()
    assert "| litert | square uint8 | 11 | 100.0% |" in out  # 2 validation images (of 3) and the 9 made ones
    assert "the first 2 of 3" in out
    assert "model.tflite" in out and f"bundle: {tmp_path / trained_run.name}" in out
    assert "exporting litert (1 of 1)" in err and "Traceback" not in err
    assert (tmp_path / trained_run.name / "model.tflite").is_file()
    assert not (tmp_path / trained_run.name / "model.onnx").exists()
    # again into the same folder: the earlier bundle of this run is replaced, nothing else is touched
    (tmp_path / "other.txt").write_text("mine")
    args = ["export", str(trained_run), "--formats", "saved_model,litert-int8", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [c["format"] for c in report["checks"]] == ["saved_model", "saved_model", "litert-int8"] and report["passed"]
    assert [r["format"] for r in report["deployment"]["formats"]] == ["saved_model", "litert-int8"]
    assert "timing saved_model (1 of 2)" in err and "exporting litert-int8 (2 of 2)" in err
    assert (tmp_path / trained_run.name / "model_int8.tflite").is_file()
    assert not (tmp_path / trained_run.name / "model.tflite").exists()
    assert (tmp_path / "other.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["export", "no-such-run", "--out", "{tmp}"], "is not a folder"),
        (["export", "{run}", "--out", "{tmp}/file/inside", "--format", "litert"], "Cannot write to"),
        (["export", "{damaged}", "--out", "{tmp}", "--format", "onnx"], "cannot be loaded"),
        (["export", "{run}", "--out", "{tmp}", "--images", "0"], "--images must be at least 1"),
        (["export", "{run}", "--out", "{tmp}", "--formats", "saved_model,pickle"], "Unknown export format pickle"),
    ],
)
def test_cli_export_user_errors_are_one_line_and_exit_2(trained_run, tmp_path, capsys, args, needle):
    from core.cli.main import main

    (tmp_path / "file").write_text("")
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    (damaged / "model.keras").write_bytes(b"PK\x03\x04 damaged")
    names = {"tmp": tmp_path, "run": trained_run, "damaged": damaged}
    assert main([a.format(**names) for a in args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
