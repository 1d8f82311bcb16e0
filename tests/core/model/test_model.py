"""The VGG16 model: preprocessing, heads, freezing, optimizers, weights files and offline ImageNet.

Real ``keras.applications.VGG16`` with random weights at 32 px; the 134M-parameter vgg-fc model is built once.
"""

from __future__ import annotations

import warnings

import h5py
import keras
import numpy as np
import pytest

from core.config import TrainConfig
from core.model.build import (
    IMAGENET_MEAN_BGR,
    VGGPreprocess,
    build_model,
    compile_model,
    describe_layers,
    freeze,
    make_optimizer,
    param_counts,
)
from core.util.errors import UserError

SIZE = 32
VGG16_LAYERS = [
    "block1_conv1", "block1_conv2", "block1_pool",
    "block2_conv1", "block2_conv2", "block2_pool",
    "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool",
    "block4_conv1", "block4_conv2", "block4_conv3", "block4_pool",
    "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool",
]  # fmt: skip


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"weights": "none", "image_size": SIZE, "precision": "float32", **changes})


@pytest.fixture(scope="module")
def small_fc():
    return build_model(config(head="small-fc"), 3)


@pytest.fixture(scope="module")
def gap_all_trainable():
    return build_model(config(head="gap", unfreeze=1000), 4)


def trainable_names(model) -> list[str]:
    return [layer.name for layer in model.layers if layer.trainable]


# ---------------------------------------------------------------------------------------------- preprocessing


def test_preprocess_layer_matches_keras_and_the_tutorials_formula():
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    ours = keras.ops.convert_to_numpy(VGGPreprocess()(x))
    keras_way = keras.applications.vgg16.preprocess_input(x.astype("float32"))
    tutorial = x[..., ::-1].astype("float64") - np.array([103.939, 116.779, 123.68])
    assert ours.dtype == np.float32 and ours.shape == x.shape
    np.testing.assert_allclose(ours, keras_way, atol=1e-4)
    np.testing.assert_allclose(ours, tutorial, atol=1e-4)
    assert IMAGENET_MEAN_BGR == (103.939, 116.779, 123.68)


def test_preprocess_is_the_first_layer_after_the_uint8_input(small_fc):
    assert small_fc.input.dtype == "uint8"
    assert tuple(small_fc.input.shape) == (None, SIZE, SIZE, 3)
    assert isinstance(small_fc.layers[1], VGGPreprocess)


# ---------------------------------------------------------------------------------------------- heads


def test_small_fc_head_is_the_tutorials(small_fc):
    names = [layer.name for layer in small_fc.layers]
    assert names[2:20] == VGG16_LAYERS
    head = small_fc.layers[20:]
    assert [type(layer).__name__ for layer in head] == ["Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    _flatten, dense1, drop1, dense2, drop2, out = head
    assert (dense1.units, dense1.activation.__name__) == (256, "relu")
    assert (dense2.units, dense2.activation.__name__) == (256, "relu")
    assert drop1.rate == drop2.rate == 0.5
    assert (out.units, out.activation.__name__, out.dtype_policy.name) == (3, "softmax", "float32")
    assert tuple(small_fc.output.shape) == (None, 3)


def test_gap_head(gap_all_trainable):
    head = gap_all_trainable.layers[20:]
    assert [type(layer).__name__ for layer in head] == ["GlobalAveragePooling2D", "Dropout", "Dense"]
    assert head[-1].units == 4 and head[-1].activation.__name__ == "softmax"
    assert tuple(gap_all_trainable.output.shape) == (None, 4)


def test_vgg_fc_head_keeps_vggs_fully_connected_layers_and_replaces_the_last():
    model = build_model(TrainConfig(weights="none", head="vgg-fc", image_size=224, precision="float32"), 5)
    names = [layer.name for layer in model.layers]
    assert names[2:] == [*VGG16_LAYERS, "flatten", "fc1", "fc2", "predictions"]
    shapes = {layer.name: tuple(layer.output.shape) for layer in model.layers[-4:]}
    assert shapes == {"flatten": (None, 25088), "fc1": (None, 4096), "fc2": (None, 4096), "predictions": (None, 5)}
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    assert model.get_layer("fc1").activation.__name__ == "relu"
    # The default unfreeze=5 trains fc1, fc2 and the new last layer (plus weightless pool and flatten).
    assert trainable_names(model) == ["block5_pool", "flatten", "fc1", "fc2", "predictions"]
    assert model.count_params() == 14_714_688 + (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 5 + 5)


def test_build_model_refuses_one_class_and_bad_options():
    with pytest.raises(ValueError, match="num_classes"):
        build_model(config(), 1)
    with pytest.raises(UserError, match="224"):
        build_model(config(head="vgg-fc", image_size=64), 2)


def test_mixed_precision_keeps_preprocessing_and_softmax_in_float32():
    before = keras.config.dtype_policy().name
    model = build_model(config(head="gap", precision="bfloat16"), 2)
    assert keras.config.dtype_policy().name == before  # the policy does not leak out of the build
    assert model.get_layer("vgg_preprocess").compute_dtype == "float32"
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    x = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    probs = keras.ops.convert_to_numpy(model(x))
    assert probs.dtype == np.float32
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("k", [1, 3, 5, 9, 20])
def test_unfreeze_k_trains_exactly_the_last_k_layers(small_fc, k):
    try:
        freeze(small_fc, k)
        flags = [layer.trainable for layer in small_fc.layers]
        assert flags == [False] * (len(flags) - k) + [True] * k
        counts = param_counts(small_fc)
        expected = sum(layer.count_params() for layer in small_fc.layers[-k:] if layer.weights)
        assert counts["trainable"] == expected
        assert counts["trainable"] + counts["frozen"] == small_fc.count_params()
    finally:
        freeze(small_fc, 5)


def test_default_unfreeze_trains_the_head_only(small_fc):
    assert trainable_names(small_fc) == ["head_dense1", "head_dropout1", "head_dense2", "head_dropout2", "predictions"]
    dense = 512 * 256 + 256 + 256 * 256 + 256 + 256 * 3 + 3
    assert param_counts(small_fc) == {"trainable": dense, "frozen": 14_714_688}


def test_unfreeze_larger_than_the_model_makes_everything_trainable(gap_all_trainable):
    assert all(layer.trainable for layer in gap_all_trainable.layers)
    assert param_counts(gap_all_trainable)["frozen"] == 0


def test_describe_layers_rows_match_the_model(small_fc):
    rows = describe_layers(small_fc)
    assert [r["name"] for r in rows] == [layer.name for layer in small_fc.layers]
    assert [r["type"] for r in rows] == [type(layer).__name__ for layer in small_fc.layers]
    assert sum(r["params"] for r in rows) == small_fc.count_params()
    counts = param_counts(small_fc)
    assert sum(r["params"] for r in rows if r["trainable"]) == counts["trainable"]
    assert sum(r["params"] for r in rows if not r["trainable"]) == counts["frozen"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["image"]["output_shape"] == f"{SIZE}x{SIZE}x3"
    assert by_name["block1_conv1"] == {
        "name": "block1_conv1",
        "type": "Conv2D",
        "output_shape": f"{SIZE}x{SIZE}x64",
        "params": 3 * 3 * 3 * 64 + 64,
        "trainable": False,
    }
    assert by_name["block5_pool"]["output_shape"] == "1x1x512"
    assert by_name["head_dropout1"]["trainable"] is False  # no weights, nothing to train
    assert by_name["predictions"]["trainable"] is True


# ---------------------------------------------------------------------------------------------- optimizers


def test_make_optimizer_defaults_are_the_tutorials_sgd():
    opt = make_optimizer(TrainConfig())
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == 0.9 and opt.nesterov is True
    schedule = opt._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.InverseTimeDecay)
    # Keras 2's decay=1e-6: lr / (1 + decay * iterations)
    assert float(schedule(1000)) == pytest.approx(0.01 / (1 + 1e-6 * 1000), rel=1e-6)
    assert float(schedule(0)) == pytest.approx(0.01, rel=1e-6)
    assert float(schedule(10**6)) == pytest.approx(0.005, rel=1e-6)


def test_no_decay_means_a_constant_learning_rate():
    opt = make_optimizer(TrainConfig(optimizer="adam", learning_rate=3e-4, decay=0))
    assert isinstance(opt, keras.optimizers.Adam)
    assert not isinstance(opt._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    assert float(opt.learning_rate) == pytest.approx(3e-4)


def test_adamw_gets_its_weight_decay():
    opt = make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.01))
    assert isinstance(opt, keras.optimizers.AdamW)
    assert opt.weight_decay == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", keras.optimizers.SGD),
        ("rmsprop", keras.optimizers.RMSprop),
        ("adagrad", keras.optimizers.Adagrad),
        ("adadelta", keras.optimizers.Adadelta),
        ("adam", keras.optimizers.Adam),
        ("adamw", keras.optimizers.AdamW),
    ],
)
def test_each_optimizer_trains_one_step(small_fc, name, cls):
    freeze(small_fc, 5)
    cfg = config(optimizer=name)
    compile_model(small_fc, cfg)
    assert isinstance(small_fc.optimizer, cls)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    y = keras.utils.to_categorical([0, 1, 2, 0], 3)
    trainable = [keras.ops.convert_to_numpy(w).copy() for w in small_fc.trainable_weights]
    frozen = [keras.ops.convert_to_numpy(w).copy() for w in small_fc.non_trainable_weights]
    logs = small_fc.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    after_t = [keras.ops.convert_to_numpy(w) for w in small_fc.trainable_weights]
    after_f = [keras.ops.convert_to_numpy(w) for w in small_fc.non_trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(trainable, after_t, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(frozen, after_f, strict=True))


# ---------------------------------------------------------------------------------------------- weights files


@pytest.fixture(scope="module")
def saved_backbone(tmp_path_factory):
    """A headless VGG16 at 32 px with recognisable block1_conv1 weights, saved in both .h5 formats."""
    from keras.src.legacy.saving import legacy_h5_format

    folder = tmp_path_factory.mktemp("weights")
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    kernel, bias = vgg.get_layer("block1_conv1").get_weights()
    known = [np.arange(kernel.size, dtype="float32").reshape(kernel.shape) / kernel.size, np.full_like(bias, 0.25)]
    vgg.get_layer("block1_conv1").set_weights(known)
    v3 = folder / "vgg16_notop.weights.h5"
    vgg.save_weights(v3)
    legacy = folder / "vgg16_notop_legacy.h5"  # the layout of Keras' own ImageNet download
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)
    return {"v3": v3, "legacy": legacy, "known": known, "last": vgg.get_layer("block5_conv3").get_weights()}


@pytest.mark.parametrize(("fmt", "size"), [("v3", SIZE), ("legacy", 48)])
def test_weights_file_is_loaded_into_the_backbone(saved_backbone, fmt, size):
    model = build_model(config(weights=str(saved_backbone[fmt]), image_size=size, head="gap"), 2)
    for got, want in zip(model.get_layer("block1_conv1").get_weights(), saved_backbone["known"], strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0], saved_backbone["last"][0])


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_model(config(weights=str(tmp_path / "nothing.h5")), 2)


def test_weights_file_that_is_not_h5_is_a_user_error(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"not weights")
    with pytest.raises(UserError, match=r"\.h5"):
        build_model(config(weights=str(path)), 2)


def test_weights_file_of_another_model_is_a_user_error(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras' per-layer loading warnings are not shown to the user
        with pytest.raises(UserError, match="VGG16"):
            build_model(config(weights=str(path)), 2)


# ---------------------------------------------------------------------------------------------- ImageNet offline


def test_imagenet_unreachable_is_an_offline_error_naming_the_alternatives(monkeypatch, isolated_dirs):
    from core.model import vgg16

    empty_home = isolated_dirs / "keras"
    url = "http://127.0.0.1:9/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    monkeypatch.setitem(vgg16.IMAGENET_URLS, False, url)
    assert not vgg16.imagenet_cache_path(False).exists()
    with pytest.raises(vgg16.OfflineWeights) as info:
        build_model(config(weights="imagenet"), 2)
    exc = info.value
    assert isinstance(exc, UserError) and exc.url == url
    assert exc.cache_dir == empty_home / "models"
    assert "127.0.0.1" in exc.short and url not in exc.short and "--weights" not in exc.short
    message = str(exc)  # what the command line prints: its own flags as the remedy
    assert "--weights none" in message and "--weights FILE.h5" in message
    assert url in message and str(empty_home / "models") in message
    assert not list(empty_home.rglob("*.h5"))


def test_failed_download_is_an_offline_error(monkeypatch):
    """The server answers the connection check but the download itself fails: same error, no traceback."""
    import core.model.build
    from core.model import vgg16

    monkeypatch.setattr(vgg16, "reachable", lambda *a, **k: True)
    monkeypatch.setitem(vgg16.IMAGENET_URLS, True, "http://127.0.0.1:9/vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    with pytest.raises(vgg16.OfflineWeights):
        core.model.build.fetch_imagenet(True)


def test_bfloat16_and_float32_agree_on_the_top_class(tmp_path):
    """The same trained weights in bfloat16 give the float32 model's top class for the large majority of images."""
    from core.data.sample import CLASSES, make_sample_image
    from core.model.inputs import load_images
    from core.train.features import plan_training

    paths, labels = [], []
    for k, cls in enumerate(CLASSES):
        for i in range(12):
            p = tmp_path / f"{cls}{i}.png"
            make_sample_image(cls, seed=i, size=64).save(p)
            paths.append(p)
            labels.append(k)
    x = load_images(paths, 64)
    y = keras.utils.to_categorical(labels, len(CLASSES))
    config = TrainConfig(weights="none", head="gap", image_size=64, unfreeze=10, precision="float32")
    keras.utils.set_random_seed(0)
    fp32 = build_model(config, len(CLASSES))
    compile_model(fp32, TrainConfig(optimizer="adam", learning_rate=1e-3, decay=0))
    fp32.fit(x, y, epochs=4, batch_size=12, verbose=0)

    bf16 = build_model(TrainConfig(**{**config.to_dict(), "precision": "bfloat16"}), len(CLASSES))
    bf16.set_weights(fp32.get_weights())
    assert bf16.get_layer("block1_conv1").compute_dtype == "bfloat16"
    a = np.asarray(fp32(x, training=False)).argmax(1)
    b = np.asarray(bf16(x, training=False)).argmax(1)
    agreement = float((a == b).mean())
    print(f"bf16/fp32 top-1 agreement: {agreement:.1%}")
    assert agreement >= 0.9
    assert plan_training(bf16).cached  # the fast path works under the mixed policy too
