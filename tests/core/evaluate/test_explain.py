"""Grad-CAM: exact maths on a hand-set model, localisation by a trained VGG16, overlays, runs and the CLI.

One run is trained for the module on images whose class is the colour of a bright patch (red or blue) put in a
random corner of a noisy background: the background says nothing about the class, so the evidence for it can
only be in the patch, and a heat map that works must light up the patch's corner, wherever that is.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import make_zip, run_cli
from PIL import Image

from core.config import TrainConfig
from core.data.dataset import load_dataset
from core.evaluate.explain import colormap, explain, gradcam, overlay, overlay_filename, save_overlays, spatial_layers
from core.model.build import build_model
from core.model.inputs import load_image
from core.model.predict import load_run, predict
from core.train.training import train
from core.util.errors import UserError

SIZE, PATCH = 64, 24
PATCH_RGB = {"blue": (0, 0, 255), "red": (255, 0, 0)}
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) quadrant: top-left, top-right, ...


def patch_image(cls: str, corner: tuple[int, int], seed: int, size=(SIZE, SIZE)) -> np.ndarray:
    """Grey noise with a ``PATCH`` px square of the class's colour in ``corner``."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    img = np.repeat(rng.integers(40, 140, (h, w, 1)), 3, axis=2).astype(np.uint8)  # grey: colour is only in the patch
    top, left = corner[0] * (h - PATCH), corner[1] * (w - PATCH)
    img[top : top + PATCH, left : left + PATCH] = PATCH_RGB[cls]
    return img


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")  # lossless: the patch's edge stays sharp
    return buf.getvalue()


def quadrant(heat: np.ndarray) -> tuple[int, int]:
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(r >= heat.shape[0] // 2), int(c >= heat.shape[1] // 2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("explain")
    entries = {
        f"{cls}/{i}.png": png(patch_image(cls, CORNERS[i % 4], seed=1000 * k + i))
        for k, cls in enumerate(PATCH_RGB)
        for i in range(32)
    }
    ds = load_dataset(make_zip(base / "patches.zip", entries), base / "work")
    # Random weights, and only block5_conv3 and the head train: the frozen layers before it run once per image
    # (the cached-features path), which keeps this to seconds; random convolutions still keep colour.
    config = TrainConfig(
        weights="none",
        head="gap",
        image_size=SIZE,
        unfreeze=5,
        optimizer="adam",
        learning_rate=1e-3,
        decay=0.0,
        batch_size=8,
        epochs=20,
        validation_split=0.2,
        precision="float32",
    )
    result = train(ds, config, base / "run")
    assert result.status == "completed" and result.metrics["path"] == "cached features"
    return result.run_dir


@pytest.fixture(scope="module")
def held_out() -> list[tuple[np.ndarray, str, tuple[int, int]]]:
    """Two new images per class and corner (seeds the training set never used): (image, class, corner)."""
    return [
        (patch_image(cls, corner, seed=9000 + 100 * r + 10 * j + k), cls, corner)
        for r in range(2)
        for k, cls in enumerate(PATCH_RGB)
        for j, corner in enumerate(CORNERS)
    ]


# ---------------------------------------------------------------------------------------------- exact maths


def colour_model() -> keras.Model:
    """A chain whose class scores are known: conv channel 0 = red, 1 = blue; score c = 3 * mean(channel c) + b."""
    inputs = keras.Input((8, 8, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    x = keras.layers.Conv2D(2, 1, use_bias=False, activation="relu", name="colours")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 2, 1] = 1.0
    model.get_layer("colours").set_weights([kernel])
    model.get_layer("predictions").set_weights([3 * np.eye(2, dtype=np.float32), np.array([0.5, -0.5], np.float32)])
    return model


def test_gradcam_is_the_class_channel_for_a_model_whose_evidence_is_known():
    model = colour_model()
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4, :4, 0] = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16  # a red ramp, top-left
    img[2:6, 2:6, 2] = 120  # blue overlapping it
    red, blue = img[..., 0] / 255.0, img[..., 2] / 255.0
    # For class c the gradient is the same everywhere on channel c and zero on the other, so the map is exactly
    # channel c scaled to a peak of 1. Scores taken after the softmax would give relu(red - blue) instead.
    heat_red = gradcam(model, img, 0, layer="colours")
    heat_blue = gradcam(model, img, 1, layer="colours")
    np.testing.assert_allclose(heat_red, red / red.max(), atol=1e-6)
    np.testing.assert_allclose(heat_blue, blue / blue.max(), atol=1e-6)
    assert heat_red.dtype == np.float32 and heat_red.shape == (8, 8)
    # None explains the top class: red here (more red than blue, and its bias).
    assert model.predict(img[None], verbose=0).argmax() == 0
    np.testing.assert_array_equal(gradcam(model, img, None, layer="colours"), heat_red)


def test_no_evidence_gives_an_all_zero_map_not_nan():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 2] = 200  # only blue
    heat = gradcam(colour_model(), img, 0, layer="colours")
    assert heat.shape == (8, 8) and not np.isnan(heat).any() and heat.max() == 0


def test_bad_layer_class_or_shape_is_refused():
    model = colour_model()
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(UserError, match=r"no layer named 'block5_conv3'.*such as colours"):
        gradcam(model, img)
    with pytest.raises(UserError, match=r"'gap' has no image-shaped output.*such as colours"):
        gradcam(model, img, layer="gap")
    with pytest.raises(ValueError, match="class_index"):
        gradcam(model, img, 2, layer="colours")
    with pytest.raises(ValueError, match="input shape"):
        gradcam(model, np.zeros((16, 16, 3), np.uint8), layer="colours")


def test_mixed_precision_model_gives_a_float32_map():
    # A run trained where bfloat16 is fast (precision "auto") computes its convolutions in bfloat16.
    model = build_model(TrainConfig(weights="none", head="small-fc", image_size=32, precision="bfloat16"), 3)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    heat = gradcam(model, img)
    assert heat.dtype == np.float32 and heat.shape == (32, 32)
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- trained VGG16


def test_trained_model_classifies_the_patches(run_dir, held_out):
    run = load_run(run_dir)
    probs = run.probabilities(np.stack([img for img, _, _ in held_out]))
    predicted = [run.classes[i] for i in probs.argmax(axis=1)]
    assert predicted == [cls for _, cls, _ in held_out]


def test_heat_map_lights_up_the_patch_corner(run_dir, held_out):
    run = load_run(run_dir)
    # At block5 a random-weight VGG16 sees the whole 64 px image from every position, so its map would say little
    # about where; block3's features are still local. The Grad-CAM arithmetic is the same for every layer.
    hits = 0
    for img, cls, corner in held_out:
        heat = gradcam(run, img, run.classes.index(cls), layer="block3_conv3")
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        hits += quadrant(heat) == corner
    assert hits >= len(held_out) - 1, f"the peak was in the patch's corner for only {hits} of {len(held_out)} images"


def test_default_layer_and_the_other_class(run_dir, held_out):
    run = load_run(run_dir)
    assert "block5_conv3" in spatial_layers(run.model) and "gap" not in spatial_layers(run.model)
    for img, cls, _ in held_out[:4]:
        own = run.classes.index(cls)
        heat = gradcam(run, img)  # block5_conv3, top class
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1
        np.testing.assert_allclose(heat, gradcam(run.model, img, own), atol=1e-6)  # top class = true class here
        other = gradcam(run, img, 1 - own)
        assert other.shape == (SIZE, SIZE) and other.min() >= 0 and other.max() <= 1
        assert np.abs(heat - other).mean() > 0.1


def test_unknown_layer_names_real_convolutions(run_dir, held_out):
    run = load_run(run_dir)
    with pytest.raises(UserError, match=r"no layer named 'block9_conv1'; choose .*block5_conv3"):
        gradcam(run, held_out[0][0], layer="block9_conv1")


# ---------------------------------------------------------------------------------------------- overlay


def test_overlay_blends_a_jet_colour_map_over_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    heat = np.tile(np.linspace(0, 1, 30, dtype=np.float32), (20, 1))
    out = overlay(image, heat)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, heat, alpha=1.0), colormap(heat))
    expected = np.rint(0.6 * image + 0.4 * colormap(heat).astype(np.float64))
    assert np.abs(out.astype(int) - expected).max() <= 1
    cold, hot = colormap(np.array([[0.0, 1.0]]))[0]
    assert cold[2] > 100 and cold[0] == 0 and hot[0] > 100 and hot[2] == 0  # blue for 0, red for 1
    mid = colormap(np.array([[0.5]]))[0, 0]
    assert mid[1] > 200  # through green-yellow in between
    with pytest.raises(ValueError, match="heatmap"):
        overlay(image, heat[:, :10])


# ---------------------------------------------------------------------------------------------- runs


def test_explain_decodes_like_prediction_and_ranks_like_predict(run_dir, tmp_path):
    run = load_run(run_dir)
    path = tmp_path / "wide.png"
    path.write_bytes(png(patch_image("red", (1, 0), seed=42, size=(72, 64))))  # not square: centre-cropped to 64
    e = explain(run, path, top_k=2)
    np.testing.assert_array_equal(e.image, load_image(path, SIZE, run.config.resize))
    assert e.heatmap.shape == (SIZE, SIZE) and e.overlay.shape == (SIZE, SIZE, 3) and e.overlay.dtype == np.uint8
    expected = predict(run, [str(path)], top_k=2)[0].top
    assert [c for c, _ in e.top] == [c for c, _ in expected] == ["red", "blue"]
    assert [p for _, p in e.top] == pytest.approx([p for _, p in expected], abs=1e-6)
    assert e.class_name == "red"
    np.testing.assert_allclose(e.heatmap, gradcam(run, e.image, run.classes.index("red")), atol=1e-6)

    other = explain(run, path.read_bytes(), class_name="blue")  # bytes work too; any class can be asked for
    assert other.class_name == "blue" and [c for c, _ in other.top] == [c for c, _ in e.top]
    assert np.abs(other.heatmap - e.heatmap).mean() > 0.1
    with pytest.raises(UserError, match="no class 'green'; its classes are blue, red"):
        explain(run, path, class_name="green")


def test_save_overlays_writes_only_inside_the_folder_with_safe_names(run_dir, tmp_path):
    run = load_run(run_dir)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sources = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "my photo (1).png"]
    for i, p in enumerate(sources):
        p.write_bytes(png(patch_image("blue", CORNERS[i], seed=77 + i)))
    names = ["a/x.png", "b/x.png", "../../my photo (1).png"]
    out = tmp_path / "out" / "new"
    written = save_overlays(run, sources, out, names=names)
    assert sorted(p.name for p in out.iterdir()) == ["my_photo_1.gradcam.png", "x-2.gradcam.png", "x.gradcam.png"]
    assert [p.parent for _, p in written] == [out] * 3
    assert sorted(p.name for p in tmp_path.rglob("*.gradcam.png")) == sorted(p.name for p in out.iterdir())
    for e, p in written:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (SIZE, SIZE) and im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), e.overlay)

    # A link planted under an overlay's name is replaced, not followed out of the folder.
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (out / "x.gradcam.png").unlink()
    (out / "x.gradcam.png").symlink_to(outside)
    save_overlays(run, sources[:1], out, names=names[:1])
    assert outside.read_text() == "keep me" and not (out / "x.gradcam.png").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == ["my_photo_1.gradcam.png", "x-2.gradcam.png", "x.gradcam.png"]

    with pytest.raises(UserError, match="no class"):
        save_overlays(run, sources, tmp_path / "never", class_name="green")
    assert not (tmp_path / "never").exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="is a file, not a folder"):
        save_overlays(run, sources, tmp_path / "file")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("photo.jpg", "photo.gradcam.png"),
        ("dir/sub/photo.final.JPG", "photo.final.gradcam.png"),
        ("../../../etc/passwd", "passwd.gradcam.png"),
        (".hidden.png", "hidden.gradcam.png"),
        ("..", "image.gradcam.png"),
        ("été à Paris.png", "été_à_Paris.gradcam.png"),
    ],
)
def test_overlay_filename_is_one_safe_component(name, expected):
    assert overlay_filename(name) == expected
    assert overlay_filename(name, 3) == expected.replace(".gradcam.png", "-3.gradcam.png")


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_predict_explain_writes_one_png_per_image(run_dir, tmp_path):
    images = []
    for i, (cls, name) in enumerate([("red", "first.png"), ("blue", "second photo.png")]):
        images.append(tmp_path / name)
        images[-1].write_bytes(png(patch_image(cls, CORNERS[i], seed=300 + i)))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    out = tmp_path / "heatmaps"
    proc = run_cli("predict", run_dir, *images, bad, "--explain", out, "--json", env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r.get("explanation", {}).get("class") for r in results] == ["red", "blue", None]
    files = [Path(r["explanation"]["file"]) for r in results[:2]]
    assert [f.name for f in files] == ["first.gradcam.png", "second_photo.gradcam.png"]
    assert sorted(out.iterdir()) == sorted(files)  # nothing for the bad file, nothing elsewhere
    for f in files:
        with Image.open(f) as im:
            im.load()
            assert im.format == "PNG" and im.size == (SIZE, SIZE) and im.mode == "RGB"

    proc = run_cli("predict", run_dir, images[0], "--explain", out, "--explain-class", "blue", env_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split("\n")[-1] == f"{images[0]}: Grad-CAM of blue saved to {out / files[0].name}"


def test_cli_explain_class_without_a_folder_is_one_line(run_dir, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(png(patch_image("red", (0, 0), seed=1)))
    proc = run_cli("predict", run_dir, image, "--explain-class", "red", env_dir=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: --explain-class needs --explain OUT_DIR, the folder for the heat-map images."
