"""Augmentation: Keras preprocessing layers on the training split only, a preview, and the end-to-end fallback."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import class_entries, make_zip, tiny_config

from core.config import TrainConfig
from core.data.dataset import load_dataset
from core.model.inputs import load_image
from core.train.augment import augmenter, preview, training_data
from core.util.errors import UserError

STRONG = dict(augment_flip=True, augment_rotation=30.0, augment_zoom=0.3, augment_translation=0.2,
              augment_contrast=0.5, augment_brightness=0.3)  # fmt: skip


def asymmetric_images(n: int, size: int = 16) -> np.ndarray:
    """Images whose left half is dark and right half bright, each with its own noise: a flip is visible."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, (n, size, size, 3), dtype=np.uint8)
    x[:, :, size // 2 :] += 200
    return x


def test_no_augmentation_by_default():
    assert not TrainConfig().augmented
    assert augmenter(TrainConfig()) is None


def test_augmenter_has_one_layer_per_setting_in_a_fixed_order():
    aug = augmenter(TrainConfig(**STRONG))
    assert [type(layer).__name__ for layer in aug.layers] == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomContrast",
        "RandomBrightness",
    ]
    assert [type(layer).__name__ for layer in augmenter(TrainConfig(augment_zoom=0.1)).layers] == ["RandomZoom"]


@pytest.mark.parametrize(
    "name, value", [("augment_rotation", 181.0), ("augment_zoom", 0.95), ("augment_translation", -0.1),
                    ("augment_contrast", 1.5), ("augment_brightness", 2.0)],
)  # fmt: skip
def test_strengths_out_of_range_are_refused_by_name(name, value):
    with pytest.raises(UserError, match="--" + name.replace("_", "-")):
        TrainConfig(**{name: value}).validate()


def test_flip_pipeline_yields_each_image_as_itself_or_its_mirror_with_its_label():
    x = asymmetric_images(32)
    y = keras.utils.to_categorical(np.arange(32) % 2, 2)
    config = TrainConfig(augment_flip=True, batch_size=8, seed=3)
    seen, flipped = 0, 0
    for images, labels in training_data(x, y, config):
        images, labels = images.numpy(), labels.numpy()
        assert images.dtype == np.uint8 and images.shape[1:] == x.shape[1:]
        for image, label in zip(images, labels, strict=True):
            # Shuffled: find the source image by content, as itself or mirrored.
            same = [i for i in range(len(x)) if np.array_equal(image, x[i])]
            mirror = [i for i in range(len(x)) if np.array_equal(image, x[i][:, ::-1])]
            assert len(same) + len(mirror) == 1
            i = (same or mirror)[0]
            np.testing.assert_array_equal(label, y[i])
            flipped += bool(mirror)
            seen += 1
    assert seen == len(x)
    assert 4 <= flipped <= 28  # about half, never all or none


def test_pipeline_without_augmentation_passes_images_through_unchanged():
    x = asymmetric_images(10)
    y = keras.utils.to_categorical(np.arange(10) % 2, 2)
    out = np.concatenate([b.numpy() for b, _ in training_data(x, y, TrainConfig(batch_size=4))])
    assert sorted(map(bytes, out)) == sorted(map(bytes, x))


def test_preview_makes_distinct_variants_of_one_image():
    image = asymmetric_images(1, size=32)[0]
    variants = preview(image, TrainConfig(**STRONG), n=6, seed=1)
    assert len(variants) == 6
    assert all(v.shape == image.shape and v.dtype == np.uint8 for v in variants)
    assert len({v.tobytes() for v in variants}) == 6
    assert not any(np.array_equal(v, image) for v in variants)
    # The same seed gives the same preview: the grid does not flicker on a rerun.
    again = preview(image, TrainConfig(**STRONG), n=6, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(variants, again, strict=True))
    assert all(np.array_equal(v, image) for v in preview(image, TrainConfig(), n=3))


@pytest.fixture
def colours(tmp_path):
    zip_path = make_zip(tmp_path / "c.zip", class_entries(classes=("red", "green", "blue"), per_class=6))
    return load_dataset(zip_path, tmp_path / "work")


def test_augmented_training_never_changes_the_validation_images(colours, monkeypatch, tmp_path):
    """fit receives the validation images exactly as decoded, and the training images through the augmenter."""
    from core.data.dataset import split_dataset
    from core.train.training import train

    seen = {}
    original_fit = keras.Model.fit

    def spy_fit(self, x=None, y=None, **kwargs):
        seen["x"], seen["validation_data"] = x, kwargs.get("validation_data")
        return original_fit(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    config = tiny_config(epochs=2, **STRONG)
    result = train(colours, config, tmp_path / "run")
    assert result.metrics["path"] == "end to end"
    assert "augmentation" in result.metrics["path_reason"]
    assert result.metrics["augmentation"].startswith("flip, rotation 30°")

    _, val_idx = split_dataset(colours, config)
    paths = colours.paths()
    plain = np.stack([load_image(paths[i], config.image_size, config.resize) for i in val_idx])
    x_val, _ = seen["validation_data"]
    np.testing.assert_array_equal(x_val, plain)
    assert not isinstance(seen["x"], np.ndarray)  # the augmented tf.data pipeline, not the raw array
    # The reported validation loss is that of the saved model on the plain validation images.
    model = keras.saving.load_model(result.run_dir / "model.keras", safe_mode=True)
    y_val = keras.utils.to_categorical([colours.items[i].label for i in val_idx], len(colours.classes))
    loss, _ = model.evaluate(plain, y_val, verbose=0)
    assert loss == pytest.approx(result.metrics["val_loss"], rel=1e-4)
    assert result.history[-1]["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert not any("augment" in layer.name or layer.name.startswith("random_") for layer in model.layers)


def test_without_augmentation_the_same_settings_use_the_feature_cache(colours, tmp_path):
    from core.train.training import train

    result = train(colours, tiny_config(epochs=1), tmp_path / "run")
    assert result.metrics["path"] == "cached features"
    assert "augmentation" not in result.metrics
