"""Where a job runs: an executor starts a claimed job and can end it; the registry is given one.

    JobRegistry(executor=ProcessExecutor(warm=True))     # or a name: "process", "thread", "ray"
    make("ray", settings.current())                      # what a name (or the settings) stands for

* ``process`` (the default): a worker process of its own on this machine (``core.jobs.worker``), which outlives a
  restart of the web server and gives its memory back when it ends; one more waits with TensorFlow loaded.
* ``ray``: an actor on a Ray cluster (``core.jobs.executors.ray``).
* ``thread``: a thread of this process (tests with stand-ins).

May import ``core.jobs``' records (states, store, runner, recovery), never the registry.
"""

from __future__ import annotations

from core.jobs.executors.base import Executor
from core.jobs.executors.process import ProcessExecutor
from core.jobs.executors.ray import RayExecutor
from core.jobs.executors.thread import ThreadExecutor
from core.jobs.states import EXECUTORS, PROCESS, RAY, THREAD
from core.settings import Settings

__all__ = ["Executor", "ProcessExecutor", "RayExecutor", "ThreadExecutor", "make"]


def make(name: str | None, s: Settings, warm: bool | None = None, ray_address: str | None = None) -> Executor:
    """The executor a name stands for; ``None``: the settings' (``executor``, else ``ray`` when ``ray_address`` is
    set, else ``process``).

    Raises:
        ValueError: an unknown name, or ``ray`` without a cluster's address.
    """
    address = ray_address or s.ray_address or None
    name = name or s.executor or (RAY if address else PROCESS)
    if name not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}. Received: executor={name!r}")
    if name == RAY:
        if not address:
            raise ValueError("The Ray executor needs the cluster's address: set RAY_ADDRESS (README: 'Ray cluster').")
        return RayExecutor(address)
    if name == THREAD:
        return ThreadExecutor()
    return ProcessExecutor(warm=s.warm_worker if warm is None else warm)
