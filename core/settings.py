"""The server's settings: the one place environment variables are read.

    s = settings.current()            # a frozen Settings, read from the environment
    s.runs_dir, s.max_jobs            # typed values with their defaults
    env = settings.worker_env(s)      # what a job's process (or a Ray worker) is started with

Every variable the product reads is a field of ``Settings`` (``VARIABLES`` maps each to its field); no other module
looks at ``os.environ``. ``current()`` builds the object once per distinct environment (a test that sets a
variable gets a new one; a server reads it once), and a job's process gets the same values passed explicitly
(``worker_env``): folders as absolute paths, so a worker started elsewhere finds the same workspace.

Settings whose bad value is a user's mistake (a quota of "lots") keep their text and are checked where they are
used, so one misspelt variable does not stop the whole server; the others fall back to their default.
May import: ``core.util`` only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from core.util.errors import UserError

ROOT = Path(__file__).resolve().parents[1]  # the project: where `python -m core.jobs.worker` is found

# Each field's environment variable. Names other programs read too (RAY_ADDRESS, KERAS_HOME) keep their own.
VARIABLES = {
    "work_dir": "CLASSIFIER_WORK_DIR",  # the workspace: saved datasets, the database, session folders
    "runs_dir": "CLASSIFIER_RUNS_DIR",  # trained runs
    "cache_dir": "CLASSIFIER_CACHE_DIR",  # the feature cache
    "db_file": "CLASSIFIER_DB",  # the database, when it must not sit in the work folder (a network mount)
    "cache_limit_mb": "CLASSIFIER_CACHE_LIMIT_MB",
    "datasets_mb": "CLASSIFIER_DATASETS_MB",  # all saved datasets together
    "quota_mb": "CLASSIFIER_QUOTA_MB",  # one person's saved datasets
    "model_cache_mb": "CLASSIFIER_MODEL_CACHE_MB",  # weights of the models held loaded for prediction
    "max_pixels": "CLASSIFIER_MAX_PIXELS",
    "admins": "CLASSIFIER_ADMINS",
    "demo_per_minute": "CLASSIFIER_DEMO_PER_MINUTE",
    "review_cap": "CLASSIFIER_REVIEW_CAP",  # images waiting in one dataset's review queue
    "api_images_per_minute": "CLASSIFIER_API_IMAGES_PER_MINUTE",
    "api_max_files": "CLASSIFIER_API_MAX_FILES",
    "api_max_mb": "CLASSIFIER_API_MAX_MB",
    "devices": "CLASSIFIER_DEVICES",
    "max_jobs": "CLASSIFIER_MAX_JOBS",
    "executor": "CLASSIFIER_EXECUTOR",
    "warm_worker": "CLASSIFIER_WARM_WORKER",
    "answer_precision": "CLASSIFIER_ANSWER_PRECISION",  # auto, float32 or bfloat16 (core.model.predict)
    "heartbeat_seconds": "CLASSIFIER_HEARTBEAT_SECONDS",
    "stop_grace_seconds": "CLASSIFIER_STOP_GRACE_SECONDS",
    "ray_gpus": "CLASSIFIER_RAY_GPUS",
    "ray_address": "RAY_ADDRESS",
    "keras_home": "KERAS_HOME",
}
ANSWER_PRECISIONS = ("auto", "float32", "bfloat16")
DB_FILE_NAME = "workspace.db"
DEFAULT_MB = {"datasets_mb": 20 * 1024, "quota_mb": 4 * 1024, "model_cache_mb": 2048}
# Folders a job on another machine must find at the same path (the shared mount): passed as absolute paths.
SHARED_FOLDERS = ("work_dir", "runs_dir", "cache_dir")


@dataclass(frozen=True)
class Settings:
    work_dir: Path = Path("work")
    runs_dir: Path = Path("runs")
    cache_dir: Path = Path("cache")
    db_file: Path | None = None  # None: workspace.db in the work folder
    cache_limit_mb: float = 4096.0
    datasets_mb: str = ""  # text, checked where used (megabytes()): "" is DEFAULT_MB's
    quota_mb: str = ""
    model_cache_mb: str = ""
    max_pixels: int = 40_000_000  # decoded RGB: 120 MB, and about four copies of it on the way to the model
    admins: tuple[str, ...] = ()  # e-mail addresses as written (core.workspace.access makes them canonical)
    demo_per_minute: int = 30  # answers one demo link gives a minute, whoever holds it
    review_cap: int = 2000  # images one dataset's review queue holds (queued or labelled); more are refused
    api_images_per_minute: int = 600  # images one API key may have classified a minute
    api_max_files: int = 64  # images in one API request
    api_max_mb: float = 64.0  # bytes of one API request's body, in megabytes
    devices: str = ""  # "": every GPU, else the CPU (core.model.distribute)
    max_jobs: int = 1  # jobs running at once: 2 CPU cores are not shared well
    executor: str = ""  # "": ray when ray_address is set, else process (core.jobs.executors)
    warm_worker: bool = True  # one worker process waits with TensorFlow loaded
    answer_precision: str = "auto"  # auto: bfloat16 where the CPU runs it fast and it cannot change the answer
    heartbeat_seconds: float = 60.0  # a job's process silent this long is taken for gone
    stop_grace_seconds: float = 30.0  # a stop not taken up within this has its process ended
    ray_gpus: float = 1.0  # GPUs a job asks the Ray cluster for, when it has any
    ray_address: str = ""
    keras_home: str = ""  # "": Keras' own rule (~/.keras)

    @property
    def db_path(self) -> Path:
        """The workspace database file: ``db_file`` when set (keep it on the app machine's own disk: SQLite's
        locks do not hold over NFS), else ``workspace.db`` in the work folder."""
        if self.db_file is not None:
            return self.db_file.expanduser().resolve()
        return self.work_dir / DB_FILE_NAME

    def megabytes(self, name: str) -> int:
        """Bytes of a setting given in megabytes (``datasets_mb``, ``quota_mb``, ``model_cache_mb``), its default
        (``DEFAULT_MB``) when unset.

        Raises:
            UserError: it is not a positive number.
        """
        raw = getattr(self, name).strip()
        try:
            mb = float(raw) if raw else DEFAULT_MB[name]
        except ValueError:
            mb = -1
        if not 0 < mb < float("inf"):
            raise UserError(f"{VARIABLES[name]} must be a positive number of megabytes (it is {raw!r}).")
        return int(mb * 1024**2)

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, folders as absolute paths: a job's process is given exactly
        what this process uses, wherever it was started from."""
        env = {}
        for name, var in VARIABLES.items():
            value = getattr(self, name)
            if name in SHARED_FOLDERS:
                value = value.resolve()
            elif name == "db_file" and value is not None:
                value = self.db_path
            elif isinstance(value, bool):
                value = "1" if value else "0"
            elif isinstance(value, tuple):
                value = ",".join(value)
            if value not in ("", None):
                env[var] = str(value)
        return env


def _number(raw: str | None, kind, default, low=None):
    try:
        value = kind(raw) if raw and raw.strip() else default
    except ValueError:
        return default
    return default if low is not None and not value >= low else value


def from_env(environ: dict[str, str] | os._Environ | None = None) -> Settings:
    """Settings read from ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    get = {name: env.get(var) for name, var in VARIABLES.items()}
    d = Settings()
    return Settings(
        work_dir=Path(get["work_dir"] or d.work_dir),
        runs_dir=Path(get["runs_dir"] or d.runs_dir),
        cache_dir=Path(get["cache_dir"] or d.cache_dir),
        db_file=Path(get["db_file"]) if get["db_file"] else None,
        cache_limit_mb=_number(get["cache_limit_mb"], float, d.cache_limit_mb),
        datasets_mb=get["datasets_mb"] or "",
        quota_mb=get["quota_mb"] or "",
        model_cache_mb=get["model_cache_mb"] or "",
        max_pixels=max(1, _number(get["max_pixels"], int, d.max_pixels)),
        admins=tuple(a.strip() for a in (get["admins"] or "").split(",") if a.strip()),
        demo_per_minute=max(1, _number(get["demo_per_minute"], int, d.demo_per_minute)),
        review_cap=max(1, _number(get["review_cap"], int, d.review_cap)),
        api_images_per_minute=max(1, _number(get["api_images_per_minute"], int, d.api_images_per_minute)),
        api_max_files=max(1, _number(get["api_max_files"], int, d.api_max_files)),
        api_max_mb=_number(get["api_max_mb"], float, d.api_max_mb, low=0.001),
        devices=(get["devices"] or "").strip(),
        max_jobs=max(1, _number(get["max_jobs"], int, d.max_jobs)),
        executor=(get["executor"] or "").strip(),
        warm_worker=(get["warm_worker"] or "1").strip() != "0",
        answer_precision=p if (p := (get["answer_precision"] or "").strip().lower()) in ANSWER_PRECISIONS else "auto",
        heartbeat_seconds=_number(get["heartbeat_seconds"], float, d.heartbeat_seconds),
        stop_grace_seconds=_number(get["stop_grace_seconds"], float, d.stop_grace_seconds),
        ray_gpus=_number(get["ray_gpus"], float, d.ray_gpus, low=0),
        ray_address=(get["ray_address"] or "").strip(),
        keras_home=get["keras_home"] or "",
    )


_lock = threading.Lock()
_built: tuple[tuple[str | None, ...], Settings] | None = None


def current() -> Settings:
    """This process's settings, built once for its environment (again only when a variable changed)."""
    global _built
    key = tuple(os.environ.get(var) for var in VARIABLES.values())
    with _lock:
        if _built is None or _built[0] != key:
            _built = (key, from_env())
        return _built[1]


def worker_env(s: Settings | None = None) -> dict[str, str]:
    """The environment of a job's process: this one's, with these settings passed explicitly and the project on
    the import path (paths in a job's settings, such as an uploaded weights file, stay relative to the same
    working directory)."""
    s = s or current()
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    return {**os.environ, **s.to_env(), "PYTHONPATH": path}


def apply(env: dict[str, str]) -> None:
    """Take a job's settings into this process (a warm worker, a Ray actor): ``env`` from ``worker_env``."""
    os.environ.update(env)


def without_thread_limit() -> None:
    """Lift the one OpenMP thread per CPU Ray gives a worker: a training uses its machine's cores, as a local worker
    does (``max_jobs`` and Ray's spreading keep jobs apart)."""
    os.environ.pop("OMP_NUM_THREADS", None)


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes) means nothing to a user. And its oneDNN
    convolutions on every x86 CPU: TensorFlow turns them on by itself only where it finds AVX512-VNNI, -BF16 or AMX,
    and on an AVX2-only CPU its own kernels run VGG16 at about a third of the speed (benchmarks/train_speed.py)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
