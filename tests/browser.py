"""What the browser tests share: the app served by `python -m core serve` (stopped and started again at will), Debian's
Chromium driven by Playwright, and waits on Streamlit's script state rather than on sleeps.

    app = AppServer(tmp_path, env={"CLASSIFIER_MAX_JOBS": "1"}).start()
    with chromium() as browser:
        page = new_page(browser)
        page.goto(app.url)
    app.restart()             # SIGTERM, then the same command on the same port and folders
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IDLE = '[data-test-script-state="notRunning"]'
STARTUP_TIMEOUT = 180  # s: the machine may be shared
WAIT = 180_000  # ms for page reruns
TRAIN_WAIT = 900_000  # ms for a training run


def browser_problem() -> str | None:
    """Why no browser can be driven here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian's chromium package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


BROWSER_PROBLEM = browser_problem()
BROWSER_REQUIRED = os.environ.get("REQUIRE_BROWSER") == "1"  # CI sets it: a missing browser fails, not skips
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        BROWSER_PROBLEM is not None and not BROWSER_REQUIRED, reason=f"browser test skipped: {BROWSER_PROBLEM}"
    ),
]


def browser_or_fail() -> None:
    if BROWSER_PROBLEM:
        pytest.fail(f"REQUIRE_BROWSER=1 but {BROWSER_PROBLEM}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class AppServer:
    """`python -m core serve` (the pages and the API) on a free local port, with its own runs, work and Keras
    folders under ``base``."""

    def __init__(self, base: Path, env: dict[str, str] | None = None, flags: list[str] | None = None):
        browser_or_fail()
        self.base, self.port = base, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runs, self.work, self.log = base / "runs", base / "work", base / "server.log"
        self.env = {
            **os.environ,  # includes the isolated folders from conftest, replaced below
            "CLASSIFIER_RUNS_DIR": str(self.runs),
            "CLASSIFIER_WORK_DIR": str(self.work),
            "KERAS_HOME": str(base / "keras"),
            **(env or {}),
        }
        self.flags = flags or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> AppServer:
        # The product's own server (make run): the pages and the API on one port, served by uvicorn.
        cmd = [sys.executable, "-m", "core", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self._config_from_flags()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{log_tail(self.log)}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become healthy in {STARTUP_TIMEOUT}s:\n{log_tail(self.log)}")
            time.sleep(0.5)

    def saved_form(self, dataset_id: str, field: str, value, timeout: float = WAIT / 1000) -> None:
        """Wait until the server's database holds ``value`` for the Train form's ``field`` of ``dataset_id`` (for
        any user): what a reload or a new tab will show."""
        db = Path(self.env.get("CLASSIFIER_DB") or self.work / "workspace.db")
        deadline, found = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            with contextlib.closing(sqlite3.connect(db, timeout=5)) as con:
                rows = con.execute("SELECT settings FROM form_settings WHERE dataset_id = ?", (dataset_id,)).fetchall()
            found = [json.loads(r[0]).get(f"cfg_{field}") for r in rows]
            if value in found:
                return
            time.sleep(0.1)
        pytest.fail(f"the server never saved {field}={value!r} for {dataset_id}; it has {found}")

    def _config_from_flags(self) -> None:
        """Streamlit options given as ``streamlit run`` flags (``--secrets.files PATH``), as uvicorn's Streamlit reads
        them: from the user's ``~/.streamlit/config.toml`` (a home of this server's own, so the checkout's files and
        the real home are left alone)."""
        if not self.flags:
            return
        sections: dict[str, list[str]] = {}
        for flag, value in zip(self.flags[::2], self.flags[1::2], strict=True):
            section, name = flag.removeprefix("--").split(".", 1)
            sections.setdefault(section, []).append(f"{name} = {json.dumps([value] if name == 'files' else value)}")
        home = self.base / "home"
        (home / ".streamlit").mkdir(parents=True, exist_ok=True)
        text = "".join(f"[{section}]\n" + "\n".join(lines) + "\n" for section, lines in sections.items())
        (home / ".streamlit" / "config.toml").write_text(text)
        self.env["HOME"] = str(home)

    def stop(self, sig: int = signal.SIGTERM, workers: bool = True) -> None:
        """Stop the server; with ``workers``, also the job processes it started (they outlive the server)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if workers:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def restart(self) -> AppServer:
        """SIGTERM the server and start it again; its job processes go on."""
        self.stop(workers=False)
        return self.start()

    def job_pids(self) -> list[int]:
        """The processes running this server's jobs now, as the workspace records them (not the warm worker that
        waits for the next one)."""
        import sqlite3

        con = sqlite3.connect(self.work / "workspace.db")
        try:
            rows = con.execute(
                "SELECT worker FROM jobs WHERE state NOT IN ('queued', 'completed', 'stopped', 'failed', 'cancelled', "
                "'interrupted') AND worker LIKE '%:%:%'"
            ).fetchall()
        finally:
            con.close()
        pids = [int(worker.rsplit(":", 2)[1]) for (worker,) in rows]
        return [pid for pid in pids if pid in self.worker_pids()]

    def worker_pids(self) -> list[int]:
        """The worker processes of this server's workspace: those running jobs, and the warm one."""
        db = str(self.work / "workspace.db")
        found = []
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"core.jobs.worker" in cmd and db.encode() in cmd:
                found.append(int(proc.name))
        return found


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT)  # expect() has its own default (5 s), separate from the page's
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            expect.set_options(timeout=5_000)


def new_page(browser, width: int = 1400):
    """A page in a new browser context: its own cookies and session, as another tab or another person."""
    context = browser.new_context(viewport={"width": width, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT)
    return page


@contextlib.contextmanager
def evidence_on_failure(pages, server: AppServer, folder: Path):
    """On failure, save a screenshot of each page to the test's tmp folder and print the server log's tail."""
    try:
        yield
    except BaseException:
        for i, page in enumerate(pages if isinstance(pages, list | tuple) else [pages]):
            shot = folder / f"failure-{i}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}\nurl: {page.url}")
        print(f"server log:\n{log_tail(server.log)}")
        raise


def settle(page) -> None:
    """Wait until the script run that the last action started has finished."""
    page.wait_for_selector(IDLE, state="attached")
    page.wait_for_selector('[data-stale="true"]', state="detached")


def assert_no_traceback(page) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert "Traceback" not in page.locator("body").inner_text()
