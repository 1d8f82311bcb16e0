"""Shared fixtures: data made inside the tests (never ../shared), an isolated runs folder and Keras home."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

ISOLATED_ENV = ("CLASSIFIER_RUNS_DIR", "CLASSIFIER_CACHE_DIR", "CLASSIFIER_WORK_DIR", "KERAS_HOME")


def pytest_configure(config):
    """Point every folder the app writes at a session temp dir before anything runs, module fixtures included."""
    base = Path(tempfile.mkdtemp(prefix="classifier-tests-"))
    for name in ISOLATED_ENV:
        os.environ[name] = str(base / name.lower())
    # Answers in float32 on every CPU, so that a test compares the same numbers on an AMX machine as on an AVX2 one;
    # tests/core/model/test_fast_answers.py sets bfloat16 answering itself.
    os.environ["CLASSIFIER_ANSWER_PRECISION"] = "float32"


# The longest files, first: with ``--dist loadfile`` each file runs whole on one worker, and a long one started last
# leaves the other worker idle until it ends (the Makefile turns off xdist's own order, most tests first, for this).
# The longest files start first, so that neither worker is left with one of them at the end.
SLOW_FIRST = ("test_e2e_workspace.py", "test_backbone_exports.py", "test_e2e.py", "test_export.py", "test_ray_jobs.py",
              "test_e2e_demo.py",
              "test_executor.py", "test_cli.py", "test_previous_layout.py")  # fmt: skip


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Each test gets its own runs, cache and work folders and an empty Keras cache: nothing leaks into the checkout."""
    base = tmp_path_factory.mktemp("env")
    monkeypatch.setenv("CLASSIFIER_RUNS_DIR", str(base / "runs"))
    monkeypatch.setenv("KERAS_HOME", str(base / "keras"))
    monkeypatch.setenv("CLASSIFIER_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("CLASSIFIER_WORK_DIR", str(base / "work"))
    return base


def jpeg_bytes(color=(200, 30, 30), size=(40, 30), seed=0, fmt="JPEG", mode="RGB") -> bytes:
    """A small noisy image of one dominant colour, encoded in ``fmt``."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color) + rng.integers(-25, 26, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


COLORS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def class_entries(prefix: str = "", classes=("red", "blue"), per_class: int = 8, size=(40, 30)) -> dict[str, bytes]:
    """Entries for a zip of class folders: ``{prefix}{class}/{i}.jpg`` with images of the class's colour."""
    return {
        f"{prefix}{cls}/{i}.jpg": jpeg_bytes(COLORS[cls], size, seed=100 * k + i)
        for k, cls in enumerate(classes)
        for i in range(per_class)
    }


@pytest.fixture
def colour_zip(tmp_path) -> Path:
    """A valid two-class zip (red vs blue), class folders at the top."""
    return make_zip(tmp_path / "colours.zip", class_entries(per_class=10))


ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env_dir: Path) -> subprocess.CompletedProcess:
    """``python -m core ARGS`` in a fresh process whose every folder lives under ``env_dir``."""
    env = {
        **os.environ,
        "CLASSIFIER_RUNS_DIR": str(env_dir / "runs"),
        "KERAS_HOME": str(env_dir / "keras"),
        "CLASSIFIER_CACHE_DIR": str(env_dir / "cache"),
        "CLASSIFIER_WORK_DIR": str(env_dir / "work"),
        "COLUMNS": "250",  # argparse wraps help to the terminal width
    }
    return subprocess.run(
        [sys.executable, "-m", "core", *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def tiny_config(**changes):
    """A training configuration that runs in seconds: random weights, 32 px, gap head, cached features, Adam."""
    from core.config import TrainConfig

    base = dict(weights="none", head="gap", image_size=32, unfreeze=3, optimizer="adam", learning_rate=0.05,
                decay=0.0, batch_size=4, epochs=2, precision="float32")  # fmt: skip
    return TrainConfig(**{**base, **changes})


@pytest.fixture
def work_dir() -> Path:
    """This test's folder for uploads and extracted datasets."""
    return Path(os.environ["CLASSIFIER_WORK_DIR"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One real run (VGG16, random weights, 32 px, one epoch), trained once for the module."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(base / "keras"))
        from core.config import TrainConfig
        from core.data.dataset import load_dataset
        from core.train.training import train

        ds = load_dataset(
            make_zip(base / "colours.zip", class_entries(classes=("red", "green", "blue"), per_class=10)), base / "work"
        )
        config = TrainConfig(weights="none", image_size=32, epochs=1, batch_size=16)
        result = train(ds, config, base / "runs" / "20200101-000000-colours-abcd")
    assert result.status == "completed"
    return result.run_dir


@pytest.fixture(autouse=True)
def no_speed_probe(request, monkeypatch):
    """The Train page queues a speed probe (a job that loads TensorFlow) when this server's speed at a size is
    unknown: page tests draw it many times and test the estimate on a recorded speed instead, except those that
    ask for ``speed_probe``."""
    pages = request.module.__name__.startswith(("test_page", "test_app", "test_compare"))
    if pages and "speed_probe" not in request.fixturenames:
        import core.jobs.probes

        monkeypatch.setattr(core.jobs.probes, "measure_in_background", lambda *args, **kwargs: None)


@pytest.fixture
def speed_probe(monkeypatch):
    """Page tests: the Train page queues its speed probe as a job, which runs a stand-in for the measurement
    (see pagetest.fake_measure_speed)."""
    from pagetest import fake_measure_speed

    import core.train.speedtest

    monkeypatch.setattr(core.train.speedtest, "measure_speed", fake_measure_speed)


@pytest.fixture(autouse=True)
def jobs_on_threads(request):
    """Each test has a registry of its own (``core.jobs.registry.registry()``), closed after it, so that no dispatcher
    of an earlier test takes this test's jobs. Page tests run their jobs on threads of the test's process, where
    stand-ins (fast_training) can replace the training; jobs in worker processes are tested in test_executor.py,
    test_ray_jobs.py and through the served app."""
    from core.jobs import registry as jobs
    from core.jobs import states

    if request.module.__name__.startswith(("test_page", "test_app", "test_compare")):
        jobs._registry = jobs.JobRegistry(executor=states.THREAD)
    yield
    with jobs._registry_lock:
        reg, jobs._registry = jobs._registry, None
    if reg is not None:
        reg.close()


@pytest.fixture
def fast_training(monkeypatch):
    """Page tests: jobs run stand-ins for training and the learning-rate test (see pagetest.fake_train)."""
    from pagetest import fake_lr_find, fake_train

    import core.train.lrfind
    import core.train.training

    monkeypatch.setattr(core.train.training, "train", fake_train)
    monkeypatch.setattr(core.train.lrfind, "lr_find", fake_lr_find)


def assert_user_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip("\n").split("\n")
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert proc.stdout == ""


def photo(seed: int, size=(256, 192)) -> Image.Image:
    """A photo-like image: smooth random colour waves, shapes, a little noise and blur; different per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.full((h, w, 3), 128.0)
    for c in range(3):
        for _ in range(5):
            fx, fy = rng.uniform(-5, 5, 2)
            arr[..., c] += rng.uniform(15, 45) * np.cos(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    im = Image.fromarray(np.clip(arr + rng.normal(0, 6, arr.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        box = (x0, y0, x0 + int(rng.integers(20, 90)), y0 + int(rng.integers(20, 70)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return im.filter(ImageFilter.GaussianBlur(1))


def encoded(im: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()
