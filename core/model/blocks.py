"""The block table of every backbone, computed from the built models: ``core/model/backbone_blocks.json``.

    python -m core.model.blocks            # rewrite the file after adding a backbone or upgrading Keras
    compute("resnet50")                     # [{"block": "stem", "layers": 6, "params": 9536}, ...]

The pages read the file (``core.model.backbones.block_table``) so that the Train page can show what "unfreeze the
last K blocks" trains without importing TensorFlow; a test checks it against the models Keras builds today.
"""

from __future__ import annotations

import json

from core.config import TrainConfig
from core.model import backbones
from core.model.build import backbone_layers, build_model

SIZE = 32  # parameters do not depend on the input size; the smallest every backbone takes builds fastest


def compute(name: str) -> list[dict]:
    """One row per block of the backbone: its name, its number of layers and of parameters, stem first."""
    model = build_model(TrainConfig(backbone=name, weights="none", head="gap", image_size=SIZE), 2)
    own = backbone_layers(model) if name != "vgg16" else model.layers[2:-3]
    rows: dict[str, dict] = {}
    for layer, block in zip(own, backbones.assign_blocks(backbones.get(name), [x.name for x in own]), strict=True):
        row = rows.setdefault(block, {"block": block, "layers": 0, "params": 0})
        row["layers"] += 1
        row["params"] += int(layer.count_params()) if layer.weights else 0
    return list(rows.values())


def main() -> None:
    table = {name: compute(name) for name in backbones.NAMES}
    backbones.BLOCKS_FILE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {backbones.BLOCKS_FILE}: " + ", ".join(f"{k} {len(v)} blocks" for k, v in table.items()))


if __name__ == "__main__":
    main()
