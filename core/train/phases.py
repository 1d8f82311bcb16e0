"""The phases of a run and the path each takes, decided from facts about its layers (no TensorFlow).

    for phase in phases(config): ...            # one phase, or the two-phase recipe (head alone, then the last K)
    d = decide(layer_facts, augment=False)      # d.cached, d.cut, d.reason: the cached fast path, or end to end

``decide`` is the one rule for where a frozen prefix ends: ``core.train.features.plan_training`` applies it to a
built model, ``core.train.estimates`` to VGG16's layer table (``core.model.vgg16``), so a time estimate plans the
same path the training will take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.config import HEAD_LAYERS, TrainConfig

CACHED, END_TO_END = "cached features", "end to end"  # the two paths, as metrics["path"] names them
# Layers that are random in training: the prefix computed once must end before the first of them.
STOCHASTIC = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout")


@dataclass
class Phase:
    number: int  # 1 or 2 in a two-phase run, 0 in a one-phase run
    unfreeze: int  # vgg16: the last K layers train; other backbones: the head's layers
    epochs: int
    learning_rate: float
    blocks: int = 0  # backbones other than vgg16: the last K blocks train with the head


def phases(config: TrainConfig) -> list[Phase]:
    """One phase as configured, or the two-phase recipe: the head alone, then the last K layers at a lower rate."""
    blocks = config.backbone != "vgg16"  # those unfreeze in blocks, the head always training
    unfreeze, head = (HEAD_LAYERS[config.head] if blocks else config.unfreeze), HEAD_LAYERS[config.head]
    last = config.unfreeze_blocks if blocks else 0
    if not config.two_phase:
        return [Phase(0, unfreeze, config.epochs, config.learning_rate, last)]
    return [
        Phase(1, head, config.epochs, config.learning_rate),
        Phase(2, unfreeze, config.fine_tune_epochs, config.learning_rate / config.fine_tune_lr_divisor, last),
    ]


@dataclass(frozen=True)
class Layer:
    """What the path depends on, for one layer."""

    name: str
    weighted: bool  # it has weights
    trains: bool  # it has weights and they train
    stochastic: bool  # random in training (Dropout and the like)


@dataclass(frozen=True)
class Decision:
    path: str  # CACHED or END_TO_END
    cut: int  # index of the first layer that trains or is random in training: the tail starts here
    reason: str  # one sentence for the user: which path and why

    @property
    def cached(self) -> bool:
        return self.path == CACHED


def decide(layers: Sequence[Layer], augment: bool = False) -> Decision:
    """Whether training can use cached prefix features: the frozen prefix ends at the first layer that trains (and
    has weights) or is random in training; it is computed once unless augmentation changes the images or no layer
    in it has weights."""
    cut = next((i for i, layer in enumerate(layers) if layer.trains or layer.stochastic), len(layers))
    if augment:
        return Decision(END_TO_END, cut, "Training end to end: augmentation changes every image, so the frozen "
                        "layers' outputs cannot be computed once and reused.")  # fmt: skip
    if cut <= 2 or not any(layer.weighted for layer in layers[:cut]):
        return Decision(END_TO_END, cut, "Training end to end: no layer before the trainable ones is frozen.")
    frozen = sum(1 for layer in layers[:cut] if layer.weighted)
    return Decision(
        CACHED, cut,
        f"Fast path: the first {cut} layers ({frozen} with weights, up to '{layers[cut - 1].name}') are frozen, "
        f"so each image goes through them once and only the last {len(layers) - cut} layers train on the result.",
    )  # fmt: skip
