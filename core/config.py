"""One description of a training run.

``TrainConfig`` is the single source of every training option: the CLI builds its flags from the fields
(help text and choices live in each field's metadata), the Train page builds its form from them, and every
saved run stores one as ``config.json``. Add an option here and it appears everywhere.

    cfg = TrainConfig(weights="none", image_size=64, epochs=2)
    cfg.validate()
    TrainConfig.from_dict(cfg.to_dict()) == cfg
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.util.errors import UserError

# core.model.backbones holds each one's entry (a test checks the two agree); vgg16 is the tutorial's.
BACKBONES = ("vgg16", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_v2_b0", "convnext_tiny", "resnet50")
NOT_VGG = BACKBONES[1:]  # the backbones that unfreeze in blocks (--unfreeze-blocks), not in layers (--unfreeze)
HEADS = ("small-fc", "gap", "vgg-fc")
RESIZES = ("crop", "pad", "stretch")
OPTIMIZERS = ("sgd", "rmsprop", "adagrad", "adadelta", "adam", "adamw")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
CLASS_WEIGHTS = ("none", "balanced")
# Each optimizer's usual starting learning rate (its Keras default; SGD's is the recipe's 0.01): the Train page and
# the CLI both start from it when no rate is given.
DEFAULT_LR = {"sgd": 0.01, "rmsprop": 0.001, "adagrad": 0.01, "adadelta": 1.0, "adam": 0.001, "adamw": 0.001}
IMBALANCED = 3.0  # the largest class with this many times the smallest's training images: suggest class weights
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512
VGG_FC_SIZE = 224  # the pretrained fc1 expects exactly 7x7x512 features
# Layers each head adds after VGG16's own (vgg-fc keeps VGG16's flatten, fc1 and fc2: only the last layer is new).
HEAD_LAYERS = {"small-fc": 6, "gap": 3, "vgg-fc": 1}


def min_fine_tune_unfreeze(head: str) -> int:
    """The smallest --unfreeze whose phase 2 trains more than the head (block5_pool, before it, has no weights)."""
    return HEAD_LAYERS.get(head, 0) + (0 if head == "vgg-fc" else 1) + 1


# The learning-rate range test's defaults: from far too small to far too large, one batch per step.
LR_FIND_START, LR_FIND_END, LR_FIND_STEPS = 1e-7, 10.0, 100


def check_lr_range(start: float, end: float, steps: int) -> None:
    """Raise ``UserError`` unless the range test's bounds make sense."""
    if not 0 < start < end:
        raise UserError(f"The start learning rate must be above 0 and below the end one (got {start:g} to {end:g}).")
    if steps < 10:
        raise UserError(f"The range test needs at least 10 steps (got {steps}).")


# A field's metadata is everything a face needs to show it: the CLI's help and choices, the form's label, widget,
# bounds and step, which section of the form it sits in, and when it applies (``when``: field -> allowed values).
# ``validate`` checks the same bounds, so the form can never offer a value the run would refuse.
def _opt(
    default: Any,
    help: str,
    choices: tuple[str, ...] | None = None,
    *,
    label: str,
    section: str,
    widget: str | None = None,
    min: float | None = None,
    max: float | None = None,
    step: float | None = None,
    fmt: str | None = None,
    when: dict[str, tuple] | None = None,
) -> Any:
    if widget is None:
        widget = "select" if choices else "checkbox" if isinstance(default, bool) else "number"
    meta = {"help": help, "choices": choices, "label": label, "section": section, "widget": widget, "min": min,
            "max": max, "step": step, "format": fmt, "when": when or {}}  # fmt: skip
    return field(default=default, metadata=meta)


SGD, ADAMW = {"optimizer": ("sgd",)}, {"optimizer": ("adamw",)}


@dataclass
class TrainConfig:
    # Backbone and head. Defaults are the 2016 tutorial's recipe.
    backbone: str = _opt(
        "vgg16",
        "the pretrained network the classifier stands on (keras.applications): vgg16 (the tutorial's), "
        "mobilenet_v3_small / mobilenet_v3_large (phones, small servers), efficientnet_v2_b0, convnext_tiny, "
        "resnet50; python -m core bakeoff DATASET compares them on your images",
        BACKBONES, label="Backbone", section="model",
    )  # fmt: skip
    weights: str = _opt(
        "imagenet",
        "the backbone's weights: 'imagenet' (downloaded once into Keras' cache), 'none' (random), "
        "or the path of a local weights file (.h5) for that backbone",
        label="Weights", section="model", widget="weights",
    )  # fmt: skip
    head: str = _opt(
        "small-fc",
        "classifier head: small-fc (Flatten, Dense 256, Dropout, Dense 256, Dropout, softmax), "
        "gap (global average pooling, Dropout, softmax) or vgg-fc (VGG16's own fc1/fc2, new last layer; vgg16 at "
        "224 px only)",
        HEADS, label="Head", section="model",
    )  # fmt: skip
    image_size: int = _opt(
        224, f"square input size in pixels ({MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE})",
        label="Image size (px)", section="model", widget="slider", min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE, step=16,
    )  # fmt: skip
    resize: str = _opt(
        "crop",
        "how an image becomes square: crop (largest centred square), pad (keep everything, fill the border) or stretch",
        RESIZES, label="Resize", section="model", widget="radio",
    )  # fmt: skip
    unfreeze: int = _opt(
        5, "vgg16: unfreeze the last K layers of the model; every layer before them stays frozen",
        label="Unfreeze the last K layers", section="model", widget="slider", min=1, when={"backbone": ("vgg16",)},
    )  # fmt: skip
    unfreeze_blocks: int = _opt(
        0, "backbones other than vgg16: train the head and the backbone's last K blocks (0: the head alone, on "
        "features computed once; block 0 is the stem, so every block trains the whole network); batch "
        "normalisation stays frozen",
        label="Unfreeze the last K blocks", section="model", widget="slider", min=0, max=64,
        when={"backbone": NOT_VGG},
    )  # fmt: skip
    # Optimizer. The tutorial: SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True).
    optimizer: str = _opt("sgd", "optimizer", OPTIMIZERS, label="Optimizer", section="optimizer")
    learning_rate: float = _opt(
        0.01, "learning rate", label="Learning rate", section="optimizer", min=1e-7, max=10.0, fmt="%g"
    )
    momentum: float = _opt(
        0.9, "momentum (sgd)", label="Momentum", section="optimizer", min=0.0, max=0.999, step=0.01, when=SGD
    )
    nesterov: bool = _opt(True, "Nesterov momentum (sgd)", label="Nesterov", section="optimizer", when=SGD)
    decay: float = _opt(
        1e-6, "learning-rate decay per step: lr / (1 + decay * step), as Keras 2's decay=",
        label="Learning-rate decay", section="more", min=0.0, max=1.0, fmt="%g",
    )  # fmt: skip
    weight_decay: float = _opt(
        0.004, "weight decay (adamw)", label="Weight decay", section="optimizer", min=0.0, max=1.0, fmt="%g",
        when=ADAMW,
    )  # fmt: skip
    # Loop.
    batch_size: int = _opt(64, "images per batch", label="Batch size", section="training", min=1, max=1024)
    epochs: int = _opt(30, "passes over the training images", label="Epochs", section="training", min=1, max=1000)
    validation_split: float = _opt(
        0.1, "share of each class held out for validation (ignored when the dataset has its own val/ folder)",
        label="Validation split", section="training", widget="slider", min=0.05, max=0.5, step=0.05,
    )  # fmt: skip
    class_weight: str = _opt(
        "none",
        "balanced: weigh each training image by the inverse of its class's share, so a small class counts as much "
        "as a big one (for imbalanced datasets); none: every image counts the same",
        CLASS_WEIGHTS, label="Class weights", section="training",
    )  # fmt: skip
    drop_val_duplicates: bool = _opt(
        True,
        "take out of validation the images whose exact or near duplicate (resized, recompressed, slightly cropped) "
        "is among the training images, so validation scores images the model has not already seen; a class keeps "
        "at least one validation image",
        label="Drop validation images that duplicate training images", section="training",
    )  # fmt: skip
    val_duplicates_limit: float = _opt(
        0.05,
        "the most of the validation images the duplicate check may drop: when it finds more, it drops none, keeps "
        "them counted and the run says so (so many look-alikes are more often distinct images with little detail "
        "than real copies); look at them on the Dataset page first, then raise this to drop them all",
        label="Drop at most this share of validation", section="training", widget="slider", min=0.0, max=1.0,
        step=0.05, when={"drop_val_duplicates": (True,)},
    )  # fmt: skip
    early_stopping: int = _opt(
        0, "stop after this many epochs without a better validation loss and keep the best weights (0: off)",
        label="Early stopping patience (0 = off)", section="more", min=0, max=100,
    )  # fmt: skip
    calibrate: bool = _opt(
        True, "after training, fit a temperature on the validation split so the probabilities mean what they say "
        "(of the images given 0.8, 8 in 10 are right), and choose the confidence below which the answer is 'not sure'",
        label="Calibrate probabilities", section="more",
    )  # fmt: skip
    none_of_these_rate: float = _opt(
        0.05, "after training, learn what the classes' images look like inside the model, so that an image unlike "
        "every class is answered 'none of these'; this is the share of the known classes' images allowed to be "
        "called 'none of these' by mistake (read off the validation images): higher catches more strange images "
        "(0: off, never answer 'none of these')",
        label="“None of these” false-alarm rate (0 = off)", section="more", min=0.0, max=0.5, step=0.01,
    )  # fmt: skip
    seed: int = _opt(
        0, "seed for the split, the weights and the shuffling: same seed, same run",
        label="Seed", section="more", min=0, max=2**31 - 1,
    )  # fmt: skip
    precision: str = _opt(
        "auto",
        "compute precision: auto picks bfloat16 where the CPU or GPU runs it fast, float32 elsewhere",
        PRECISIONS, label="Precision", section="more",
    )  # fmt: skip
    # Augmentation: the training images only, never the validation ones. Any of it means end-to-end training,
    # since an image that changes every epoch cannot have its frozen-layer outputs computed once.
    augment_flip: bool = _opt(
        False, "augmentation: flip training images left to right at random", label="Flip left-right",
        section="augmentation",
    )  # fmt: skip
    augment_rotation: float = _opt(
        0.0, "augmentation: rotate training images by up to this many degrees (0-180)",
        label="Rotation (degrees)", section="augmentation", widget="slider", min=0.0, max=180.0, step=5.0,
    )  # fmt: skip
    augment_zoom: float = _opt(
        0.0, "augmentation: zoom training images in or out by up to this fraction (0-0.9)",
        label="Zoom", section="augmentation", widget="slider", min=0.0, max=0.9, step=0.05,
    )  # fmt: skip
    augment_translation: float = _opt(
        0.0, "augmentation: shift training images by up to this fraction of their width and height (0-0.5)",
        label="Shift", section="augmentation", widget="slider", min=0.0, max=0.5, step=0.05,
    )  # fmt: skip
    augment_contrast: float = _opt(
        0.0, "augmentation: change training images' contrast by up to this fraction (0-1)",
        label="Contrast", section="augmentation", widget="slider", min=0.0, max=1.0, step=0.05,
    )  # fmt: skip
    augment_brightness: float = _opt(
        0.0, "augmentation: change training images' brightness by up to this fraction (0-1)",
        label="Brightness", section="augmentation", widget="slider", min=0.0, max=1.0, step=0.05,
    )  # fmt: skip
    # Two-phase fine-tuning (the Keras transfer-learning guide's recipe).
    fine_tune_epochs: int = _opt(
        0,
        "two-phase fine-tuning: train only the new head for --epochs epochs with every VGG16 layer frozen, "
        "then unfreeze the last --unfreeze layers and train this many more epochs (0: one phase)",
        label="Epochs (phase 2)", section="fine_tune", min=0, max=1000,
    )  # fmt: skip
    fine_tune_lr_divisor: float = _opt(
        10.0, "two-phase fine-tuning: phase 2 trains at --learning-rate divided by this (10-100 is usual)",
        label="Phase 2 learning rate: phase 1's divided by", section="fine_tune", widget="slider", min=1.0,
        max=100.0, step=1.0,
    )  # fmt: skip
    # Data: images of the dataset left out of training and validation. Not a control of the form (widget "none"):
    # the Evaluate page decides them per image (core.evaluate.label_issues) and a saved dataset's exclusions are added
    # as a run starts, so config.json records what was left out. A tuple, so that the default can be shared.
    exclude: tuple[str, ...] = _opt(
        (), "leave this image out of training and validation (its path inside the dataset, e.g. cats/12.jpg); "
        "repeat for more. A saved dataset's images excluded on the Evaluate page are left out as well",
        label="Excluded images", section="data", widget="none",
    )  # fmt: skip

    # The saved dataset's version (core.workspace.versions) the run trains on: None = the newest when the job is
    # submitted, which then pins the version it was given; a run's config.json records the one it trained on.
    dataset_version: int | None = _opt(
        None, "the version of a saved dataset to train on, as DATASET@N says (python -m core datasets versions ID "
        "lists them); a run records the one it trained on. None: the newest",
        label="Dataset version", section="data", widget="none",
    )  # fmt: skip

    def __post_init__(self):
        self.exclude = tuple(self.exclude or ())  # config.json holds a list; the CLI gives None when not used

    @property
    def augmented(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["section"] == "augmentation")

    @property
    def two_phase(self) -> bool:
        return self.fine_tune_epochs > 0

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.fine_tune_epochs

    def validate(self) -> TrainConfig:
        """Raise ``UserError`` naming the first option out of range; return self."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(f"{_flag(f.name)} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}.")
        for f in dataclasses.fields(self):
            low, high, value = f.metadata.get("min"), f.metadata.get("max"), getattr(self, f.name)
            if (low is not None and value < low) or (high is not None and value > high):
                span = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
                raise UserError(f"{_flag(f.name)} must be {span}; got {value:g}.")
        if self.head == "vgg-fc" and self.backbone != "vgg16":
            raise UserError(
                f"The vgg-fc head is VGG16's own fully connected layers; with --backbone {self.backbone} choose the "
                "small-fc or gap head."
            )
        if self.head == "vgg-fc" and self.image_size != VGG_FC_SIZE:
            raise UserError(
                f"The vgg-fc head keeps VGG16's fully connected layers, which only fit {VGG_FC_SIZE}x{VGG_FC_SIZE} "
                f"images; choose --image-size {VGG_FC_SIZE} or another head (small-fc, gap)."
            )
        version = self.dataset_version
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise UserError(f"--dataset-version must be a version number (1, 2, ...); got {version!r}.")
        checks = [
            (
                not self.two_phase or self.backbone != "vgg16" or self.unfreeze >= min_fine_tune_unfreeze(self.head),
                f"Two-phase fine-tuning trains the {self.head} head's {HEAD_LAYERS.get(self.head)} layers alone first; "
                f"--unfreeze must be at least {min_fine_tune_unfreeze(self.head)} so that phase 2 also trains a VGG16 "
                "layer",
            ),
        ]
        checks.append((
            not self.two_phase or self.backbone == "vgg16" or self.unfreeze_blocks >= 1,
            f"Two-phase fine-tuning trains the head alone first; phase 2 unfreezes the last --unfreeze-blocks blocks "
            f"of {self.backbone}, so give at least 1",
        ))  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise UserError(message + ".")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict, ignoring keys this version does not know (older or newer runs)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def describe(cls, section: str | None = None) -> list[dataclasses.Field]:
        """The fields with their metadata (help, choices, label, widget, bounds), for building a CLI or a form."""
        return [f for f in dataclasses.fields(cls) if section in (None, f.metadata["section"])]

    def applies(self, name: str) -> bool:
        """Whether field ``name`` matters with the other settings (momentum only for SGD, and so on)."""
        when = next(f for f in dataclasses.fields(self) if f.name == name).metadata["when"]
        return all(getattr(self, other) in allowed for other, allowed in when.items())


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
