"""Every backbone other than VGG16 (whose runs the other export tests cover) makes a run that trains two epochs from
a cached pass, is found again from its folder, exports to every format and passes the parity check."""

from __future__ import annotations

import json

import pytest

from core.config import BACKBONES
from tests.conftest import class_entries, make_zip, tiny_config

OTHERS = [name for name in BACKBONES if name != "vgg16"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from core.data.dataset import load_dataset

    base = tmp_path_factory.mktemp("backbones")
    return load_dataset(make_zip(base / "two.zip", class_entries(classes=("red", "blue"), per_class=6)), base / "work")


@pytest.mark.parametrize("name", OTHERS)
def test_each_backbone_trains_from_a_cached_pass_exports_and_passes_parity(name, dataset, tmp_path):
    from core.publish.export import export_run
    from core.train.training import train

    config = tiny_config(backbone=name, epochs=2, calibrate=False)
    first = train(dataset, config, tmp_path / "runs" / f"20200101-000000-{name.replace('_', '-')}-abcd")
    assert first.status == "completed"
    assert first.metrics["path"] == "cached features" and first.metrics["cache_misses"] == len(dataset.items)
    saved = json.loads((first.run_dir / "config.json").read_text())
    assert saved["backbone"] == name
    again = train(dataset, config, tmp_path / "runs" / f"20200101-000001-{name.replace('_', '-')}-abcd")
    assert again.metrics["cache_hits"] == len(dataset.items) and again.metrics["cache_misses"] == 0

    bundle = export_run(first.run_dir, tmp_path / "exports", formats=("saved_model", "litert", "onnx"))
    assert {c.format for c in bundle.checks} >= {"saved_model", "litert", "onnx"}
    assert bundle.passed, [(c.format, c.input, c.top1_agreement, c.max_abs_diff) for c in bundle.checks]
    from core.model import backbones

    assert f"a {backbones.get(name).title} image classifier" in (bundle.path / "MODEL_CARD.md").read_text()
