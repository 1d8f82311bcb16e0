"""The training recipe in words for the model card: each TrainConfig setting as the form labels it, with its value.

rows = settings_rows(config, metrics, dataset)    # [{"setting", "label", "value", "text"}, ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.model import backbones

BACKBONE_TITLES = {name: b.title for name, b in backbones.BACKBONES.items()}
HEADS = {
    "small-fc": "small-fc: Flatten, Dense 256, Dropout, Dense 256, Dropout, softmax",
    "gap": "gap: global average pooling, Dropout, softmax",
    "vgg-fc": "vgg-fc: VGG16's own fully connected layers, new last layer",
}
RESIZES = {
    "crop": "centre crop (the largest centred square)",
    "pad": "pad (the whole image, bordered to a square)",
    "stretch": "stretch (both sides scaled; the aspect ratio is not kept)",
}
OPTIMIZERS = {"sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta", "adam": "Adam",
              "adamw": "AdamW"}  # fmt: skip


def _unfreeze_row(c: TrainConfig) -> tuple:
    if c.backbone == "vgg16":
        return "unfreeze", c.unfreeze, f"{c.unfreeze} (every layer before them stays frozen)"
    return "unfreeze_blocks", c.unfreeze_blocks, f"{c.unfreeze_blocks} (with the head; batch normalisation frozen)"


def settings_rows(config: TrainConfig, metrics: dict, dataset: dict) -> list[dict[str, Any]]:
    """The TrainConfig in words: rows of {setting, label (the form's own), value (as saved), text}."""
    label = {f.name: f.metadata["label"] for f in TrainConfig.describe()}
    c = config
    title = BACKBONE_TITLES.get(c.backbone, c.backbone)
    if c.weights == "imagenet":
        weights = f"ImageNet (pretrained {title})"
    elif c.weights == "none":
        weights = "random (not pretrained)"
    else:  # only the file's name: the server's folders are nobody's business
        weights = f"a {title} weights file ({Path(str(c.weights)).name})"
    optimizer = OPTIMIZERS.get(c.optimizer, c.optimizer)
    if c.applies("momentum"):
        optimizer += f", momentum {c.momentum:g}" + (", Nesterov" if c.nesterov else "")
    if c.applies("weight_decay"):
        optimizer += f", weight decay {c.weight_decay:g}"
    rate = f"{c.learning_rate:g}" + (f", decaying by {c.decay:g} per step" if c.decay else "")
    epochs = f"{c.epochs}"
    if c.two_phase:
        epochs += (
            f" with only the head training, then {c.fine_tune_epochs} more with the last {c.unfreeze} layers "
            f"unfrozen at the learning rate ÷ {c.fine_tune_lr_divisor:g}"
        )
    augmentation = [
        f.metadata["label"] + ("" if isinstance(getattr(c, f.name), bool) else f" {getattr(c, f.name):g}")
        for f in TrainConfig.describe("augmentation")
        if getattr(c, f.name)
    ]
    if c.class_weight == "balanced":
        given = metrics.get("class_weights") or {}
        weights_used = ", ".join(f"{k} {v:g}" for k, v in given.items() if isinstance(v, int | float))
        class_weight = "balanced: each class weighs as much as the others" + (
            f" ({weights_used})" if weights_used else ""
        )
    else:
        class_weight = "none: every image counts the same"
    has_val_folder = any(r["val"] for r in dataset["classes"]) and dataset["layout"] == "split"
    rows = [
        ("backbone", c.backbone, title),
        ("weights", c.weights, weights),
        ("head", c.head, HEADS.get(c.head, c.head)),
        ("image_size", c.image_size, f"{c.image_size} × {c.image_size}"),
        ("resize", c.resize, RESIZES.get(c.resize, c.resize)),
        _unfreeze_row(c),
        ("optimizer", c.optimizer, optimizer),
        ("learning_rate", c.learning_rate, rate),
        ("epochs", c.epochs, epochs),
        ("batch_size", c.batch_size, str(c.batch_size)),
        ("validation_split", c.validation_split,
         "the dataset's own validation folder" if has_val_folder else f"{c.validation_split:.0%} of each class"),
        ("augmentation", c.augmented, ", ".join(augmentation) if augmentation else "none"),
        ("class_weight", c.class_weight, class_weight),
        ("early_stopping", c.early_stopping,
         f"after {c.early_stopping} epochs without a better validation loss" if c.early_stopping else "off"),
        ("calibrate", c.calibrate, "yes" if c.calibrate else "no"),
        ("seed", c.seed, str(c.seed)),
    ]  # fmt: skip
    if c.exclude:
        rows.append(("exclude", len(c.exclude), f"{len(c.exclude)} images left out as suspected label errors"))
    return [{"setting": k, "label": label.get(k, "Augmentation"), "value": v, "text": t} for k, v, t in rows]
