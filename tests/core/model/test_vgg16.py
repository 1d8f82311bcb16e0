"""VGG16 without TensorFlow: the static layer table against the real model, Keras' home and cache, offline weights.

The layer tables are checked against ``core.model.build.build_model`` with random weights for every head; the vgg-fc
model (224 px, 134M parameters) is built once.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from core.config import HEADS, TrainConfig
from core.model import vgg16
from core.util.errors import UserError

CASES = [(head, size) for head in HEADS if head != "vgg-fc" for size in (32, 64, 75)] + [("vgg-fc", 224)]


@pytest.mark.parametrize(("head", "size"), CASES)
def test_layer_table_is_what_the_built_model_describes(head, size):
    from core.model.build import build_model, describe_layers

    num_classes = 3 if size != 64 else 7
    # unfreeze beyond the layer count: the table's "trainable" means "has weights"
    config = TrainConfig(weights="none", head=head, image_size=size, unfreeze=10**6, precision="float32")
    real = describe_layers(build_model(config, num_classes))
    table = vgg16.layer_table(head, size, num_classes)
    assert [r["name"] for r in table] == [r["name"] for r in real]
    for got, want in zip(table, real, strict=True):
        assert got == want, want["name"]


def test_layer_table_refuses_what_the_model_would_refuse():
    with pytest.raises(UserError, match="224"):
        vgg16.layer_table("vgg-fc", 64, 3)
    with pytest.raises(UserError, match="--image-size"):
        vgg16.layer_table("gap", 16, 3)
    with pytest.raises(ValueError, match="head"):
        vgg16.layer_table("resnet", 64, 3)
    with pytest.raises(ValueError, match="num_classes"):
        vgg16.layer_table("gap", 64, 1)


def test_unfrozen_mask_counts_from_the_end():
    assert vgg16.unfrozen_mask(5, 2) == [False, False, False, True, True]
    assert vgg16.unfrozen_mask(3, 10) == [True, True, True]
    rows = vgg16.layer_table("gap", 32, 2)
    mask = vgg16.unfrozen_mask(len(rows), 5)
    assert [r["name"] for r, m in zip(rows, mask, strict=True) if m] == [
        "block5_conv3", "block5_pool", "gap", "head_dropout", "predictions",
    ]  # fmt: skip


def test_importing_it_loads_neither_tensorflow_nor_keras():
    code = (
        "import sys, core.model.vgg16 as v; v.layer_table('small-fc', 64, 3); v.imagenet_cache_path(True); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- ImageNet weights


def test_weights_facts_are_keras_own():
    from keras.src.applications import vgg16 as keras_vgg16

    assert vgg16.imagenet_url(True) == keras_vgg16.WEIGHTS_PATH
    assert vgg16.imagenet_url(False) == keras_vgg16.WEIGHTS_PATH_NO_TOP
    source = Path(keras_vgg16.__file__).read_text()
    assert all(f'file_hash="{md5}"' in source for md5 in vgg16.IMAGENET_MD5.values())


def _keras_home_in(env: dict[str, str]) -> tuple[str, str]:
    """(Keras' own home, core.model.vgg16's) in a fresh process with this environment: Keras reads it once, at
    import."""
    code = (
        "import os; from keras.src.backend.config import keras_home; import core.model.vgg16 as v; "
        "print(os.path.expanduser(keras_home())); print(v.keras_home())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    keras_says, ours = out.stdout.strip().splitlines()[-2:]
    return keras_says, ours


def test_keras_home_follows_keras_own_rule(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_HOME"}
    keras_says, ours = _keras_home_in({**env, "KERAS_HOME": str(tmp_path / "kh")})
    assert keras_says == ours == str(tmp_path / "kh")
    (tmp_path / "home").mkdir()
    keras_says, ours = _keras_home_in({**env, "HOME": str(tmp_path / "home")})  # no KERAS_HOME: ~/.keras
    assert keras_says == ours == str(tmp_path / "home" / ".keras")


def test_cache_path_is_keras_home_models(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))  # need not exist yet: Keras makes it
    notop = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert vgg16.imagenet_cache_path(False) == tmp_path / "kh" / "models" / notop
    assert vgg16.imagenet_cache_path(True).name == "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    monkeypatch.setenv("KERAS_HOME", str(blocked / "kh"))  # cannot be made: get_file falls back to /tmp/.keras
    assert vgg16.weights_home() == Path("/tmp/.keras")


def test_model_downloads_to_where_the_check_looks(monkeypatch, tmp_path):
    """A file in core.model.vgg16's cache path is the one Keras' get_file finds: no download, no network."""
    import core.model.build

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))  # Keras itself was imported with another home
    path = vgg16.imagenet_cache_path(False)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in weights")
    monkeypatch.setitem(vgg16.IMAGENET_MD5, False, hashlib.md5(b"stand-in weights").hexdigest())
    monkeypatch.setitem(vgg16.IMAGENET_URLS, False, "http://127.0.0.1:9/" + path.name)  # would fail if fetched
    assert core.model.build.fetch_imagenet(False) == str(path)
    assert vgg16.imagenet_problem("gap") is None


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No cached weights, and a download address nothing listens on."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    for top in (True, False):
        name = vgg16.imagenet_cache_path(top).name
        monkeypatch.setitem(vgg16.IMAGENET_URLS, top, f"http://127.0.0.1:9/{name}")
    return tmp_path / "kh" / "models"


def test_offline_problem_is_one_plain_sentence(offline):
    problem = vgg16.imagenet_problem("small-fc", timeout=2)
    assert problem == (
        "The ImageNet weights for VGG16 could not be downloaded: this server has no connection to 127.0.0.1."
    )
    assert "--" not in problem and "'none'" not in problem and "/" not in problem


def test_offline_error_carries_the_remedy_for_each_face(offline):
    exc = vgg16.imagenet_offline("vgg-fc", timeout=2)
    assert isinstance(exc, vgg16.OfflineWeights) and isinstance(exc, UserError)
    assert exc.url == "http://127.0.0.1:9/vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    assert exc.cache_dir == offline and exc.filename == "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    line = str(exc)
    assert "\n" not in line and line.startswith(exc.short)
    assert "--weights none" in line and "--weights FILE.h5" in line and exc.url in line and str(offline) in line
    again = pickle.loads(pickle.dumps(exc))
    assert (str(again), again.short, again.url) == (line, exc.short, exc.url)


def test_cached_weights_need_no_connection(offline):
    path = vgg16.imagenet_cache_path(False)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    assert vgg16.imagenet_problem("gap", timeout=2) is None
    assert vgg16.imagenet_problem("vgg-fc", timeout=2) is not None  # the other file
