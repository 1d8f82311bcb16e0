"""The backbone table: every network a classifier can be built on, one entry each, known without TensorFlow.

    entry = get("mobilenet_v3_large")      # UserError naming the choices for an unknown name
    entry.preprocessing                    # "caffe" (BGR minus the ImageNet mean) or "inside" (its own layers)
    block_table("resnet50")                # [{"block": "stem", "layers": 6, "params": 9536}, ...] for the Train page
    weights_problem("convnext_tiny")       # None when its ImageNet weights are cached or reachable, else a sentence

Adding a backbone is one entry in ``BACKBONES`` plus its row in ``backbone_blocks.json``
(``python -m core.model.blocks`` writes it from the built models; a test checks it against them). Every entry is a
``keras.applications`` network without its top; ``core.model.build`` puts the app's uint8 input and the entry's
preprocessing in front of it and a head behind it, all in one flat model.

What "unfreeze" means differs: VGG16 keeps the tutorial's count of layers (``--unfreeze``, ``core.model.vgg16``);
the others are residual networks whose layers only make sense in whole blocks, so ``--unfreeze-blocks K`` trains the
head and the last K blocks (block 0 is the stem, so the number of blocks plus one trains everything). Their batch
normalisation layers always stay frozen, in inference mode, as the Keras transfer-learning guide advises: a few
hundred images would otherwise overwrite ImageNet's statistics.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.model import vgg16
from core.util.errors import UserError

KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"
BLOCKS_FILE = Path(__file__).with_name("backbone_blocks.json")


@dataclass(frozen=True)
class Backbone:
    name: str  # the product's name for it: --backbone, config.json, the card
    title: str  # as a person writes it
    application: str  # the keras.applications constructor
    preprocessing: str  # "caffe": core.model.build.VGGPreprocess; "inside": the application's own layers
    block_pattern: str  # a layer name's block is group 1 of this; layers that do not match join the block before
    weights_file: str  # Keras' ImageNet weights file without the top layers, under KERAS_WEIGHTS
    weights_hash: str  # its checksum, as keras.applications checks it
    about: str  # what it is good for, one line for the Train page
    options: dict = field(default_factory=dict)  # more arguments of the constructor

    @property
    def weights_url(self) -> str:
        return KERAS_WEIGHTS + self.weights_file


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "vgg16", "VGG16", "VGG16", "caffe", r"^(block\d+)_",
            "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", vgg16.IMAGENET_MD5[False],
            "the tutorial's network: 15.5 GFLOP and 528 MB with its fc layers, 59 MB without",
        ),
        Backbone(
            "mobilenet_v3_small", "MobileNetV3 Small", "MobileNetV3Small", "inside", r"^(expanded_conv(?:_\d+)?)_",
            "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "d3e8ec802a04aa4fc771ee12a9a9b836",
            "for phones and small servers: 0.06 GFLOP, under 4 MB", {"include_preprocessing": True},
        ),
        Backbone(
            "mobilenet_v3_large", "MobileNetV3 Large", "MobileNetV3Large", "inside", r"^(expanded_conv(?:_\d+)?)_",
            "mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "07fb09a5933dd0c8eaafa16978110389",
            "mobile-sized with more accuracy: 0.22 GFLOP, 12 MB", {"include_preprocessing": True},
        ),
        Backbone(
            "efficientnet_v2_b0", "EfficientNetV2 B0", "EfficientNetV2B0", "inside", r"^(block\d+[a-z])_",
            "efficientnet_v2/efficientnetv2-b0_notop.h5", "893217f2bb855e2983157299931e43ff",
            "accuracy per FLOP: 0.7 GFLOP, 24 MB", {"include_preprocessing": True},
        ),
        Backbone(
            "convnext_tiny", "ConvNeXt Tiny", "ConvNeXtTiny", "inside", r"^convnext_tiny_(stage_\d+_block_\d+)_",
            "convnext/convnext_tiny_notop.h5", "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
            "the most accurate here on ImageNet: 4.5 GFLOP, 111 MB", {"include_preprocessing": True},
        ),
        Backbone(
            "resnet50", "ResNet50", "ResNet50", "caffe", r"^(conv\d_block\d+)_",
            "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626",
            "the classic residual network: 4.1 GFLOP, 94 MB",
        ),
    )
}  # fmt: skip
DEFAULT = "vgg16"
NAMES = tuple(BACKBONES)


def get(name: str) -> Backbone:
    """The entry for ``name``; a UserError naming the choices when there is none."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(f"There is no backbone {name!r}; choose one of {', '.join(NAMES)}.") from None


def of_model(model_name: str) -> Backbone:
    """The backbone a built model stands on, from the name ``core.model.build`` gives it (``<backbone>_<head>``)."""
    for name in sorted(NAMES, key=len, reverse=True):
        if model_name == name or model_name.startswith(name + "_"):
            return BACKBONES[name]
    return BACKBONES[DEFAULT]  # models saved before backbones had a choice are VGG16


# ---------------------------------------------------------------------------------------------- blocks


def assign_blocks(entry: Backbone, layer_names: list[str]) -> list[str]:
    """The block of each of the backbone's own layers, in order: "stem" until the first named block, and a layer
    whose name names no block (the last norm, an activation Keras numbered) belongs to the block before it."""
    pattern, current, out = re.compile(entry.block_pattern), "stem", []
    for name in layer_names:
        if m := pattern.match(name):
            current = m.group(1)
        out.append(current)
    return out


@functools.cache
def _blocks() -> dict[str, list[dict]]:
    return json.loads(BLOCKS_FILE.read_text())


def block_table(name: str) -> list[dict]:
    """One row per block of the backbone (stem first): its name, its layers and its parameters."""
    return [dict(row) for row in _blocks()[get(name).name]]


def block_count(name: str) -> int:
    """How many blocks ``--unfreeze-blocks`` can count, the stem included: this many trains the whole backbone."""
    return len(block_table(name))


def unfrozen_blocks(name: str, blocks: int) -> list[str]:
    """The names of the last ``blocks`` blocks, which train with the head."""
    rows = block_table(name)
    return [r["block"] for r in rows[len(rows) - min(max(blocks, 0), len(rows)) :]]


# ---------------------------------------------------------------------------------------------- ImageNet weights


def weights_cache_path(name: str, include_top: bool = False) -> Path:
    """Where the backbone's ImageNet weights file is once downloaded, in Keras' cache."""
    if name == "vgg16":
        return vgg16.imagenet_cache_path(include_top)
    return vgg16.weights_home() / "models" / Path(get(name).weights_file).name


def offline_error(name: str, include_top: bool = False) -> vgg16.OfflineWeights:
    if name == "vgg16":
        return vgg16.offline_error(include_top)
    entry = get(name)
    return vgg16.OfflineWeights(entry.weights_url, weights_cache_path(name).parent, entry.title)


def check_weights(name: str, head: str, timeout: float = vgg16.REACH_TIMEOUT) -> None:
    """Return when the ImageNet weights for this backbone and head are cached or reachable; else raise
    ``OfflineWeights`` (the download server is the same for every backbone)."""
    include_top = name == "vgg16" and vgg16.needs_top(head)
    if not weights_cache_path(name, include_top).exists() and not vgg16.reachable(include_top, timeout):
        raise offline_error(name, include_top)


def weights_problem(name: str, head: str = "gap", timeout: float = vgg16.REACH_TIMEOUT) -> str | None:
    """None when the backbone's ImageNet weights are cached or can be downloaded; else one sentence saying so."""
    try:
        check_weights(name, head, timeout)
    except vgg16.OfflineWeights as exc:
        return exc.short
    return None
