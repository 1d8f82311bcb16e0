"""Jobs on a Ray cluster: the executor the job dispatcher uses when ``RAY_ADDRESS`` is set (``core.jobs.registry``).

    executor = RayExecutor("10.0.0.5:6379")     # connects this process (the web server) to the cluster when needed
    executor.start(db_path, job_id, on_end)     # the claimed job runs on some machine of the cluster
    executor.kill(job_id)                       # its actor ended at once (a stop not taken up, a silent worker)

Each job is a detached Ray actor of its own, asking for one CPU and, when the cluster has GPUs, for
``$CLASSIFIER_RAY_GPUS`` of them (default 1; more let one job train on several GPUs of one machine). Detached: it
outlives a restart of the web server, which finds it again by its name. It runs the same code as a local worker
(``core.jobs.runner.run_job``) and exits when done, so its memory goes back to its machine.

What must be shared: the datasets and runs folders, at the same path on every machine (a shared mount of the
workspace folder). The workspace database is *not* opened from other machines: SQLite's write-ahead log works only
between processes of one machine. Progress, stops, heartbeats and results travel through a small relay actor that
Ray keeps on the web server's machine, next to the database file, and that reads and writes it there (a heartbeat is
stamped with that machine's clock). A job whose actor went silent, or did not take up a stop in time, has its actor
killed (``RayExecutor.kill``).

The project's ``core`` package is shipped to the workers by Ray (``py_modules``); the machines need the same Python
packages (``make setup``, then ``ray start`` from the project's virtual environment: README, "Ray cluster").
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import socket
import threading
from pathlib import Path
from typing import Any

from core import settings
from core.jobs import runner
from core.jobs.executors.base import Executor
from core.jobs.host import figures, lower_priority
from core.jobs.recovery import ended_unexpectedly, fail
from core.jobs.states import FAILED, FINISHED, RAY, RAY_PREFIX
from core.jobs.store import Store, worker_id
from core.util.errors import UserError
from core.workspace import db, records, runs

log = logging.getLogger(__name__)
NAMESPACE = "image-classifier"
CORE = Path(__file__).resolve().parents[1]


def _code_version() -> str:
    """A digest of this package's code as this process loaded it: a relay left running by an older version of it
    is not reused."""
    h = hashlib.sha256()
    for file in sorted(CORE.rglob("*.py")):
        h.update(str(file.relative_to(CORE)).encode() + file.read_bytes())
    return h.hexdigest()[:12]


CODE_VERSION = _code_version()  # read once: the files may change on disk under a running server


def _job_actor_name(job_id: str) -> str:
    return f"job-{job_id}"


def _relay_name(path: Path) -> str:
    where = f"{socket.gethostname()}:{path.resolve()}:{CODE_VERSION}"
    return "workspace-" + hashlib.sha256(where.encode()).hexdigest()[:16]


class Relay:
    """The workspace records for jobs on other machines: runs next to the database file (a Ray actor pinned to
    the web server's machine) and does what ``core.jobs.store.Store`` does there."""

    def __init__(self, path: str, folders: dict[str, str]):
        self.store, self.folders = Store(Path(path)), folders

    def call(self, method: str, *args: Any) -> Any:
        if method not in ("job", "take", "beat", "stop_asked", "write", "finish"):
            raise ValueError(f"Unknown store method. Received: method={method!r}")
        return getattr(self.store, method)(*args)

    def sees(self, what: str, name: str = "") -> bool:
        """Whether the web server's machine has this folder (``runs``, or ``datasets`` and a dataset's id)."""
        folder = Path(self.folders[what]) / name
        return folder.is_dir() and folder.resolve().is_relative_to(Path(self.folders[what]).resolve())


class RemoteStore(Store):
    """``core.jobs.store.Store`` for a process on another machine: every read and write goes through the relay."""

    def __init__(self, relay):
        self.relay = relay

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(self.relay.call.remote(method, *args))

    def job(self, job_id):
        return self._call("job", job_id)

    def take(self, job_id, worker):
        return self._call("take", job_id, worker)

    def beat(self, job_id):
        self._call("beat", job_id)

    def stop_asked(self, job_id):
        return self._call("stop_asked", job_id)

    def write(self, job_id, fields, points):
        self._call("write", job_id, fields, points)

    def finish(self, job_id, kind, state, error, metrics, result):
        self._call("finish", job_id, kind, state, error, metrics, result)


def _unseen(relay, row: dict[str, Any]) -> str | None:
    """Why this machine cannot do the job with the shared folders, in words; None when it can."""
    import ray

    host = socket.gethostname()
    folders = [("runs folder", runs.runs_dir(), "runs", "")]
    if row.get("dataset_id"):
        folders.insert(
            0, ("dataset's folder", records.datasets_dir() / row["dataset_id"], "datasets", row["dataset_id"])
        )
    for what, folder, where, name in folders:
        # Missing here but there on the web server's machine: the shared mount is missing (a dataset missing on
        # both was deleted meanwhile, which the job itself reports).
        if not folder.is_dir() and ray.get(relay.sees.remote(where, name)):
            return (
                f"The machine {host} that took this job cannot see the {what} {folder}: the workspace folder "
                "must be on storage that every machine of the Ray cluster mounts at the same path (README: "
                "'Ray cluster')."
            )
    return None


class JobActor:
    """One job on one machine of the cluster (a detached actor that ends itself when the job has ended)."""

    def run(self, relay, job_id: str, env: dict[str, str]) -> None:
        import ray

        settings.apply(env)  # the folders as the web server names them: the shared mount's paths
        settings.without_thread_limit()
        lower_priority()
        store = RemoteStore(relay)
        try:
            if store.take(job_id, f"{RAY_PREFIX}{job_id}@{worker_id()}"):
                row = store.job(job_id)
                problem = _unseen(relay, row)
                if problem:
                    store.finish(job_id, row["kind"], FAILED, problem, {}, None)
                else:
                    runner.run_job(store, job_id, local=False, figures=figures)
        except Exception as exc:  # the relay or the shared folders failed: say so where the page reads it
            log.exception("job %s could not run here", job_id)
            with contextlib.suppress(Exception):
                store.finish(job_id, "", FAILED, f"The job could not run on the Ray worker "
                             f"{socket.gethostname()}: {type(exc).__name__}: {str(exc)[:300]}", {}, None)  # fmt: skip
        finally:
            ray.actor.exit_actor()


def _reachable(address: str) -> None:
    """Fail within seconds when nothing listens at ``host:port`` (Ray itself would retry for minutes)."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if m:
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=5):
            pass


def _words(exc: BaseException) -> str:
    """How a Ray job's process ended, from Ray's exception, in a few words."""
    text = str(exc)
    kind = re.search(r"Worker exit type: (\w+)", text)
    if kind:
        return f"its Ray worker died ({kind.group(1).replace('_', ' ').lower()})"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"Ray reported {type(exc).__name__}: {first[:300]}"


class RayExecutor(Executor):
    """Starts claimed jobs on a Ray cluster and reports the ones whose process died."""

    name = RAY

    def __init__(self, address: str):
        """The cluster at ``address`` (``auto``: the one started on this machine), connected to when first needed."""
        self.address = address
        self._connected = False
        self._error = ""
        self._relays: dict[Path, Any] = {}
        self._waiting: set[str] = set()  # jobs this process started and waits for: alive until their end

    def connect(self) -> bool:
        """Connect this process to the cluster, once; False (the reason in ``error``) when it cannot."""
        if not self._connected:
            try:
                self._connect()
                self._connected = True
            except UserError as exc:
                self._error = str(exc)
                log.warning("%s", exc)
        return self._connected

    @property
    def error(self) -> str:
        return self._error

    def _connect(self) -> None:
        """Raises:
        UserError: Ray is not installed, or the cluster cannot be reached.
        """
        address = self.address
        try:
            import ray
        except ImportError:
            raise UserError(
                "RAY_ADDRESS is set, but Ray is not installed here: run `pip install -r requirements-ray.txt`, or "
                "unset RAY_ADDRESS to run jobs on this machine."
            ) from None
        try:
            _reachable(address)
            if not ray.is_initialized():
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    runtime_env={"py_modules": [str(CORE)]},
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for an unusable address
            raise UserError(
                f"The Ray cluster at {address} cannot be reached ({type(exc).__name__}: {str(exc)[:200]}). Start it "
                "with `ray start --head` (README: 'Ray cluster'), or unset RAY_ADDRESS to run jobs on this machine."
            ) from None

    def _relay(self, path: Path):
        if path not in self._relays:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            folders = {"runs": str(runs.runs_dir().resolve()), "datasets": str(records.datasets_dir().resolve())}
            self._relays[path] = (
                ray.remote(Relay)
                .options(
                    name=_relay_name(path),
                    namespace=NAMESPACE,
                    lifetime="detached",
                    get_if_exists=True,
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
                )
                .remote(str(path.resolve()), folders)
            )
        return self._relays[path]

    @staticmethod
    def gpus() -> float:
        import ray

        if not ray.cluster_resources().get("GPU"):
            return 0
        return settings.current().ray_gpus

    def worker_label(self, job_id: str) -> str:
        return RAY_PREFIX + job_id

    def start(self, path: Path, job_id: str, on_end=None) -> None:
        """Start the claimed job on the cluster; a thread of this process waits for its end."""
        import ray

        if not self.connect():
            fail(path, job_id, self._error)
            return
        try:
            runs.runs_dir().mkdir(parents=True, exist_ok=True)  # so that a machine that lacks it can tell
            actor = (
                ray.remote(JobActor)
                .options(
                    name=_job_actor_name(job_id),
                    namespace=NAMESPACE,
                    lifetime="detached",
                    max_restarts=0,
                    num_cpus=1,
                    num_gpus=self.gpus(),
                    scheduling_strategy="SPREAD",  # jobs go to different machines while there are free ones
                )
                .remote()
            )
            ref = actor.run.remote(self._relay(path), job_id, shared_env())
            self._waiting.add(job_id)
        except Exception as exc:
            ended_unexpectedly(path, job_id, f"it could not be started on the Ray cluster: {_words(exc)}")
            return
        threading.Thread(target=self._reap, args=(path, job_id, ref, on_end), name=f"ray-{job_id}",
                         daemon=True).start()  # fmt: skip

    def _reap(self, path: Path, job_id: str, ref, on_end) -> None:
        import ray

        try:
            ray.get(ref)
            how = None
        except SystemExit:  # this process is leaving Ray (shutting down): the job goes on; a restart finds it
            return
        except Exception as exc:  # an actor that ends itself also ends here (exit type: intended user exit)
            how = _words(exc)
        finally:
            self._waiting.discard(job_id)
        with db.connect(path=path) as con:
            row = con.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is not None and row["state"] not in FINISHED:
            ended_unexpectedly(path, job_id, how or "its Ray worker ended without a word")
        if on_end:
            on_end()

    def kill(self, job_id: str) -> bool:
        """End the job's actor at once, wherever it runs (Ray's equivalent of SIGKILL: a stop it did not take up, a
        worker that went silent); False when there is none. Its end is recorded by whoever waits for it, or by the
        next look for jobs whose process has gone."""
        import ray

        try:
            actor = ray.get_actor(_job_actor_name(job_id), namespace=NAMESPACE)
        except ValueError:
            return False
        except Exception:  # the cluster does not answer: the next look tries again
            log.warning("job %s: its Ray actor could not be reached to end it", job_id, exc_info=True)
            return False
        log.warning("job %s: ending its Ray actor", job_id)
        ray.kill(actor, no_restart=True)
        return True

    def end(self, job_id: str, worker: str, sig: int) -> None:
        if worker.startswith(RAY_PREFIX):
            if self.connect():
                self.kill(job_id)
        else:
            super().end(job_id, worker, sig)

    def alive(self):
        return self.job_alive if self._connected else None

    def job_alive(self, job_id: str) -> bool:
        """Whether the job's actor still exists (one this process started is, until its end has been seen: a new
        actor's name reaches the cluster a moment after it is asked for)."""
        import ray

        if job_id in self._waiting:
            return True
        try:
            ray.get_actor(_job_actor_name(job_id), namespace=NAMESPACE)
        except ValueError:
            return False
        except Exception:  # the cluster does not answer: do not declare its jobs dead
            return True
        return True


def shared_env() -> dict[str, str]:
    """The settings a job on another machine runs with: the folders at the same paths (the shared mount)."""
    return {k: v for k, v in settings.current().to_env().items() if k.startswith("CLASSIFIER_")}
