"""Class weights: ``balanced`` weighs each training image by the inverse of its class's share. On a test-made 10:1
imbalanced set whose classes overlap, it raises the small class's recall on a balanced validation split."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from core.data.dataset import load_dataset
from core.model.inputs import load_image
from core.model.predict import load_run
from core.train.record import balanced_weights
from core.train.training import train


def _image(shift: float, seed: int) -> bytes:
    """A noisy square whose colour runs from blue (shift < 0) to red (shift > 0)."""
    rng = np.random.default_rng(seed)
    base = np.array([128 + shift, 128, 128 - shift])
    arr = np.clip(base + rng.integers(-20, 21, (24, 24, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """60 'big' and 6 'small' training images, 20 and 20 for validation; the two colour ranges overlap."""
    base = tmp_path_factory.mktemp("imbalanced")
    rng = np.random.default_rng(0)
    entries = {}
    for split, n_big, n_small, seed in (("train", 60, 6, 0), ("val", 20, 20, 500)):
        for i in range(n_big):
            entries[f"{split}/big/{i}.png"] = _image(rng.normal(12, 30), 1000 + seed + i)
        for i in range(n_small):
            entries[f"{split}/small/{i}.png"] = _image(rng.normal(-12, 30), 3000 + seed + i)
    path = base / "imbalanced.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return load_dataset(path, base / "extracted")


def _recall(run_dir: Path, ds, name: str) -> float:
    run = load_run(run_dir)
    val = [it for it in ds.items if it.split == "val" and ds.classes[it.label] == name]
    x = np.stack([load_image(ds.root / it.path, run.config.image_size) for it in val])
    return float((run.probabilities(x).argmax(1) == ds.classes.index(name)).mean())


def test_balanced_weights_make_every_class_weigh_the_same():
    weights = balanced_weights([0] * 60 + [1] * 6)
    assert weights == pytest.approx({0: 66 / 120, 1: 66 / 12})
    assert 60 * weights[0] == pytest.approx(6 * weights[1])
    assert balanced_weights([0, 1, 2]) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_balanced_class_weights_raise_the_small_class_s_recall(imbalanced, tmp_path):
    recalls = {}
    for choice in ("none", "balanced"):
        config = tiny_config(epochs=10, batch_size=16, class_weight=choice)
        result = train(imbalanced, config, tmp_path / choice)
        recalls[choice] = _recall(tmp_path / choice, imbalanced, "small")
        saved = json.loads((tmp_path / choice / "config.json").read_text())
        assert saved["class_weight"] == choice
        if choice == "balanced":
            assert result.metrics["class_weights"] == {"big": pytest.approx(0.55), "small": pytest.approx(5.5)}
        else:
            assert "class_weights" not in result.metrics
    assert recalls["balanced"] >= recalls["none"] + 0.2, recalls


def test_a_run_saved_before_class_weights_existed_loads_with_none():
    from core.config import TrainConfig

    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "class_weight"}
    assert TrainConfig.from_dict(old).class_weight == "none"
    with pytest.raises(Exception, match="class"):
        TrainConfig(class_weight="heavy").validate()
