"""A real server for the API's tests (``python -m core serve``: uvicorn, the pages and the API), with its own
workspace and a copy of the module's trained run.

    @pytest.fixture(scope="module")
    def server(tmp_path_factory, trained_run):
        yield from live_server(tmp_path_factory, trained_run)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from browser import free_port, log_tail
from conftest import ROOT

# Small limits, so that the refusals can be reached with a few small images.
LIMITS = {
    "CLASSIFIER_API_MAX_FILES": "6",
    "CLASSIFIER_API_MAX_MB": "1",
    "CLASSIFIER_API_IMAGES_PER_MINUTE": "40",
    "CLASSIFIER_MAX_PIXELS": "1000000",
    "CLASSIFIER_WARM_WORKER": "0",
    "CLASSIFIER_REVIEW_CAP": "3",
}


class LiveServer:
    def __init__(self, base: Path, env: dict[str, str]):
        self.base, self.port = base, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api/v1"
        self.log = base / "server.log"
        self.env = {
            **os.environ,
            "CLASSIFIER_RUNS_DIR": str(base / "runs"),
            "CLASSIFIER_WORK_DIR": str(base / "work"),
            "CLASSIFIER_CACHE_DIR": str(base / "cache"),
            "KERAS_HOME": str(base / "keras"),
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> LiveServer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "core", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{log_tail(self.log)}")
            try:
                if httpx.get(f"{self.api}/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail(f"the server did not answer in 120 s:\n{log_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def in_workspace(self):
        """This server's folders as this process's settings (to make keys, read records) for a ``with`` block."""
        mp = pytest.MonkeyPatch()
        for name in ("CLASSIFIER_RUNS_DIR", "CLASSIFIER_WORK_DIR", "CLASSIFIER_CACHE_DIR", *LIMITS):
            mp.setenv(name, self.env[name])
        return _Undo(mp)

    def key(self, run_id: str, **options) -> str:
        from core.workspace import access, keys

        with self.in_workspace():
            return keys.create(run_id, access.OPERATOR, options.pop("name", "test"), **options)[1]


class _Undo:
    def __init__(self, mp: pytest.MonkeyPatch):
        self.mp = mp

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.mp.undo()


def live_server(tmp_path_factory, trained_run, env: dict[str, str] | None = None):
    base = tmp_path_factory.mktemp("api")
    shutil.copytree(trained_run, base / "runs" / trained_run.name)
    live = LiveServer(base, {**LIMITS, **(env or {})}).start()
    try:
        yield live
    finally:
        live.stop()
