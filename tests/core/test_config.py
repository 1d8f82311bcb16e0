"""TrainConfig: the tutorial's defaults, range checks, and the dict round trip used by saved runs."""

from __future__ import annotations

import dataclasses

import pytest

from core.config import HEADS, OPTIMIZERS, PRECISIONS, RESIZES, TrainConfig
from core.util.errors import UserError


def test_defaults_are_the_tutorials_recipe():
    c = TrainConfig()
    assert (c.optimizer, c.learning_rate, c.momentum, c.nesterov, c.decay) == ("sgd", 0.01, 0.9, True, 1e-6)
    assert (c.batch_size, c.validation_split) == (64, 0.1)
    assert (c.resize, c.image_size, c.unfreeze, c.head, c.weights) == ("crop", 224, 5, "small-fc", "imagenet")


def test_defaults_validate_and_validate_returns_self():
    c = TrainConfig()
    assert c.validate() is c


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"image_size": 16}, "--image-size"),
        ({"image_size": 31}, "--image-size"),
        ({"image_size": 600}, "--image-size"),
        ({"image_size": 513}, "--image-size"),
        ({"head": "vgg-fc", "image_size": 64}, "224"),
        ({"head": "vgg-fc", "image_size": 512}, "224"),
        ({"optimizer": "lbfgs"}, "--optimizer"),
        ({"head": "resnet"}, "--head"),
        ({"resize": "zoom"}, "--resize"),
        ({"precision": "float64"}, "--precision"),
        ({"validation_split": 0}, "--validation-split"),
        ({"validation_split": 1}, "--validation-split"),
        ({"validation_split": -0.1}, "--validation-split"),
        ({"unfreeze": 0}, "--unfreeze"),
        ({"learning_rate": 0}, "--learning-rate"),
        ({"learning_rate": -0.01}, "--learning-rate"),
        ({"momentum": 1.0}, "--momentum"),
        ({"momentum": -0.1}, "--momentum"),
        ({"decay": -1e-6}, "--decay"),
        ({"weight_decay": -1}, "--weight-decay"),
        ({"batch_size": 0}, "--batch-size"),
        ({"epochs": 0}, "--epochs"),
        ({"early_stopping": -1}, "--early-stopping"),
    ],
)
def test_validate_refuses_out_of_range_options(changes, needle):
    with pytest.raises(UserError) as info:
        TrainConfig(**changes).validate()
    message = str(info.value)
    assert needle in message
    assert "\n" not in message  # one sentence for the CLI's single error line


@pytest.mark.parametrize(
    "changes",
    [
        {"image_size": 32},
        {"image_size": 512},
        {"head": "vgg-fc", "image_size": 224},
        {"head": "gap", "image_size": 48},
        {"validation_split": 0.5},
        {"momentum": 0.0},
        {"decay": 0.0},
        {"early_stopping": 3},
    ],
)
def test_validate_accepts_the_edges_of_each_range(changes):
    TrainConfig(**changes).validate()


def test_every_choice_is_accepted():
    for head in ("small-fc", "gap"):
        TrainConfig(head=head, image_size=64).validate()
    for resize in RESIZES:
        TrainConfig(resize=resize).validate()
    for opt in OPTIMIZERS:
        TrainConfig(optimizer=opt).validate()
    for precision in PRECISIONS:
        TrainConfig(precision=precision).validate()
    assert set(HEADS) == {"small-fc", "gap", "vgg-fc"}
    assert set(OPTIMIZERS) == {"sgd", "rmsprop", "adagrad", "adadelta", "adam", "adamw"}


def test_dict_round_trip():
    c = TrainConfig(weights="none", head="gap", image_size=48, optimizer="adamw", learning_rate=3e-4, seed=7)
    d = c.to_dict()
    assert d["head"] == "gap" and d["image_size"] == 48
    assert set(d) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert TrainConfig.from_dict(d) == c


def test_from_dict_ignores_unknown_keys_and_fills_missing_ones():
    c = TrainConfig.from_dict({"head": "gap", "image_size": 64, "future_option": 1, "colour": "red"})
    assert c.head == "gap" and c.image_size == 64
    assert c.optimizer == "sgd"  # missing keys keep their defaults (older runs)
    assert not hasattr(c, "future_option")


def test_describe_gives_help_for_every_field_and_choices_where_there_are_some():
    fields = {f.name: f for f in TrainConfig.describe()}
    assert set(fields) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(f.metadata["help"] for f in fields.values())
    assert fields["head"].metadata["choices"] == HEADS
    assert fields["optimizer"].metadata["choices"] == OPTIMIZERS
    assert fields["epochs"].metadata["choices"] is None


def _valid_at(name: str, value) -> TrainConfig:
    """A config that is valid but for ``name`` (two phases need phase 2 to reach into VGG16: unfreeze 10)."""
    return TrainConfig(**{"weights": "none", "unfreeze": 10, name: value})


@pytest.mark.parametrize(
    "field", [f for f in TrainConfig.describe() if f.metadata["min"] is not None], ids=lambda f: f.name
)
def test_every_bounded_field_accepts_its_bounds_and_refuses_past_them(field):
    low, high = field.metadata["min"], field.metadata["max"]
    _valid_at(field.name, low).validate()
    step = field.metadata["step"] or (1 if isinstance(field.default, int) else low * 0.5 or 1e-9)
    with pytest.raises(UserError, match=field.name.replace("_", "-")):
        _valid_at(field.name, low - step).validate()
    if high is not None:
        _valid_at(field.name, high).validate()
        with pytest.raises(UserError, match=field.name.replace("_", "-")):
            _valid_at(field.name, high + step).validate()


def test_every_field_says_how_a_form_shows_it():
    for f in TrainConfig.describe():
        m = f.metadata
        assert m["label"] and m["section"] and m["widget"], f.name
        if m["widget"] in ("slider", "number") and f.name != "unfreeze":  # unfreeze's top is the model's depth
            assert m["min"] is not None and m["max"] is not None, f.name
            assert type(m["min"]) is type(f.default) and type(m["max"]) is type(f.default), f.name
        assert set(m["when"]) <= {g.name for g in TrainConfig.describe()}, f.name


def test_the_cli_and_the_train_page_start_from_the_same_learning_rate_per_optimizer():
    from core.cli.common import config_from as _config
    from core.cli.main import build_parser
    from core.config import DEFAULT_LR

    for optimizer, rate in DEFAULT_LR.items():
        args = build_parser().parse_args(["train", "data.zip", "--optimizer", optimizer])
        assert _config(args).learning_rate == rate
    args = build_parser().parse_args(["train", "data.zip", "--optimizer", "adam", "--learning-rate", "0.02"])
    assert _config(args).learning_rate == 0.02
    assert DEFAULT_LR["adam"] == 0.001 and DEFAULT_LR["sgd"] == TrainConfig().learning_rate == 0.01
