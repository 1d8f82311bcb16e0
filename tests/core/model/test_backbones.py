"""The backbone table against the models Keras builds: every backbone builds on the app's uint8 input with its own
preprocessing inside, unfreezes in whole blocks with batch normalisation frozen, and splits into a cached prefix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.config import BACKBONES, TrainConfig
from core.model import backbones
from core.util.errors import UserError
from tests.conftest import tiny_config

OTHERS = [name for name in BACKBONES if name != "vgg16"]


def test_the_table_names_every_choice_of_the_config_and_nothing_else():
    assert backbones.NAMES == BACKBONES
    assert backbones.get("resnet50").preprocessing == "caffe"
    with pytest.raises(UserError, match="choose one of vgg16, mobilenet_v3_small"):
        backbones.get("alexnet")
    assert backbones.of_model("mobilenet_v3_large_gap").name == "mobilenet_v3_large"
    assert backbones.of_model("vgg16_small_fc").name == "vgg16"
    assert backbones.of_model("functional").name == "vgg16"  # models saved before the choice existed
    from core.imaging.spec import NORMALISATION, preprocessing_spec

    assert set(NORMALISATION) == set(BACKBONES)  # every export's preprocessing.json says what its first layers do
    assert "resnet50.preprocess_input" in preprocessing_spec(224, "crop", "resnet50")["normalisation_in_model"]


@pytest.mark.parametrize("name", BACKBONES)
def test_the_saved_block_table_is_what_keras_builds_today(name):
    from core.model.blocks import compute

    assert backbones.block_table(name) == compute(name)


def test_resnet50_normalises_inside_the_model_exactly_as_keras_preprocess_input():
    from keras.applications.resnet50 import preprocess_input

    from core.model.build import build_model

    model = build_model(tiny_config(backbone="resnet50"), 2)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    inside = np.asarray(model.get_layer("caffe_preprocess")(pixels))
    np.testing.assert_allclose(inside, preprocess_input(pixels.astype("float32")), atol=1e-4)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_v2_b0", "convnext_tiny"])
def test_the_others_take_uint8_and_keep_their_own_preprocessing_layers(name):
    import keras

    from core.model.build import build_model

    model = build_model(tiny_config(backbone=name), 2)
    assert model.inputs[0].dtype == "uint8" and model.name == f"{name}_gap"
    kinds = {type(layer).__name__ for layer in model.layers[:5]}
    assert kinds & {"Rescaling", "Normalization"}, kinds
    pixels = np.full((1, 32, 32, 3), 255, dtype=np.uint8)
    assert np.isfinite(np.asarray(model(pixels))).all()
    assert not [x for x in model.layers if isinstance(x, keras.layers.Dropout) and x.rate and x.name != "head_dropout"]


def test_unfreezing_two_blocks_trains_exactly_their_layers_and_the_head_never_batch_norm():
    import keras

    from core.model.build import backbone_layers, build_model

    model = build_model(tiny_config(backbone="resnet50", unfreeze_blocks=2), 2)
    entry = backbones.get("resnet50")
    own = backbone_layers(model)
    blocks = dict(zip([x.name for x in own], backbones.assign_blocks(entry, [x.name for x in own]), strict=True))
    trains = {x.name for x in model.layers if x.trainable and x.weights}
    expected = {n for n, b in blocks.items() if b in ("conv5_block2", "conv5_block3")}
    expected = {n for n in expected if model.get_layer(n).weights}
    expected = {n for n in expected if not isinstance(model.get_layer(n), keras.layers.BatchNormalization)}
    assert trains == expected | {"predictions"}
    assert any(isinstance(model.get_layer(n), keras.layers.BatchNormalization) for n in blocks if "conv5_block3" in n)


def test_too_many_blocks_and_vgg_fc_elsewhere_are_sentences():
    from core.model.build import build_model

    count = backbones.block_count("mobilenet_v3_small")
    with pytest.raises(UserError, match=f"has {count} blocks"):
        build_model(tiny_config(backbone="mobilenet_v3_small", unfreeze_blocks=count + 1), 2)
    with pytest.raises(UserError, match="vgg-fc head is VGG16's own"):
        TrainConfig(backbone="resnet50", head="vgg-fc", image_size=224).validate()
    with pytest.raises(UserError, match="unfreeze-blocks"):
        TrainConfig(backbone="resnet50", fine_tune_epochs=2, unfreeze_blocks=0).validate()


@pytest.mark.parametrize("name", OTHERS)
@pytest.mark.parametrize("blocks", [0, 2])
def test_the_cached_prefix_and_the_tail_make_the_whole_model(name, blocks):
    from core.model.build import build_model
    from core.train.features import plan_training

    model = build_model(tiny_config(backbone=name, unfreeze_blocks=blocks), 3)
    plan = plan_training(model)
    assert plan.cached, plan.reason
    assert any(x.trainable and x.weights for x in plan.tail.layers)
    assert not any(x.trainable and x.weights for x in plan.prefix.layers)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(plan.tail(plan.prefix(pixels))), np.asarray(model(pixels)), atol=1e-6)


def test_a_missing_weights_file_and_a_wrong_one_are_sentences(tmp_path):
    from core.model.build import build_model

    with pytest.raises(UserError, match="does not exist"):
        build_model(tiny_config(backbone="mobilenet_v3_small", weights=str(tmp_path / "no.h5")), 2)
    wrong = legacy_h5(build_model(tiny_config(), 2), tmp_path / "wrong.h5")
    with pytest.raises(UserError, match="does not hold MobileNetV3 Small weights"):
        build_model(tiny_config(backbone="mobilenet_v3_small", weights=str(wrong)), 2)


def legacy_h5(model, path):
    """Weights saved in the layout of Keras' own ImageNet downloads."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def test_a_weights_file_of_the_backbone_loads(tmp_path):
    import keras

    from core.model.build import build_model

    base = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = legacy_h5(base, tmp_path / "mobilenet.h5")
    model = build_model(tiny_config(backbone="mobilenet_v3_small", weights=str(path)), 2)
    layer = next(x for x in base.layers if x.name == "conv")
    np.testing.assert_array_equal(model.get_layer("conv").get_weights()[0], layer.get_weights()[0])


def test_offline_imagenet_weights_name_the_backbone_and_the_way_out(monkeypatch):
    from core.model import vgg16

    monkeypatch.setattr(vgg16, "reachable", lambda include_top, timeout=10: False)
    problem = backbones.weights_problem("efficientnet_v2_b0")
    assert problem.startswith("The ImageNet weights for EfficientNetV2 B0 could not be downloaded")
    with pytest.raises(vgg16.OfflineWeights, match="--weights none"):
        backbones.check_weights("efficientnet_v2_b0", "gap")
    err = backbones.offline_error("convnext_tiny")
    assert err.url.endswith("convnext/convnext_tiny_notop.h5") and err.cache_dir.name == "models"
    import pickle

    assert pickle.loads(pickle.dumps(err)).short == err.short


def test_cached_imagenet_weights_are_used_without_the_network(monkeypatch, tmp_path):
    """A file already in Keras' cache is found where the download would put it (the weights are the test's)."""
    import keras

    from core.model import vgg16
    from core.model.build import build_model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(vgg16, "reachable", lambda include_top, timeout=10: False)
    base = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    legacy_h5(base, backbones.weights_cache_path("mobilenet_v3_small"))
    assert backbones.weights_problem("mobilenet_v3_small") is None
    entry = backbones.get("mobilenet_v3_small")  # the checksum is of the real file, not of this test's weights
    monkeypatch.setitem(backbones.BACKBONES, entry.name, dataclasses.replace(entry, weights_hash=None))
    model = build_model(tiny_config(backbone="mobilenet_v3_small", weights="imagenet"), 2)
    layer = next(x for x in base.layers if x.name == "conv")
    np.testing.assert_array_equal(model.get_layer("conv").get_weights()[0], layer.get_weights()[0])
