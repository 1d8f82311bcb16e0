"""The browser session: keys of session state, widgets and the address; the start of every page; small helpers.

    session.start()          # in app.py, before st.navigation
    session.page()           # first line of every page script

Keys are named here once (session state, widgets, query parameters), so two pages never disagree on a name.
"""

from __future__ import annotations

import functools
import re
import runpy
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core.data.dataset import Dataset
from core.util.errors import UserError
from core.workspace import access, datasets, db, records, versions
from core.workspace import folders as workspace
from core.workspace.runs import RunInfo, find_run

# What Markdown (and Streamlit's :colour[...], :material/icon: and $LaTeX$) could read as markup. "_" inside a word
# ("my_file") and ":" before a space never are, and stay as typed.
_MARKDOWN = re.compile(r"[\\`*\[\]<>$~|]|(?<![^\W_])_|_(?![^\W_])|:(?=\S)|^\s*#")
_AUTOLINK = re.compile(r"(\bwww)\.", re.IGNORECASE)
APP = Path(__file__).resolve().parent.parent / "app.py"

# Session-state keys
SESSION_ID = "session_id"
DATASET = "dataset"  # the id of the saved dataset this session works on (core.workspace.datasets)
DATASET_OPENED = "dataset_opened"  # that dataset, opened: reruns do not read its dataset.json again
DATASET_KEY = "dataset_key"  # which upload the current dataset came from
WEIGHTS_FILE = "weights_file"
CURRENT_JOB = "current_job"  # the training job this session started last
MY_JOBS = "my_jobs"  # every job this session started: they stop at once, others ask first
USER = (
    "user"  # [issuer, subject, e-mail, key]: who signed in, recorded once per session (core.workspace.access.sign_in)
)
FLASH = "flash"  # a confirmation to show once on the next run ("Deleted run …")
# Widget keys
FORM_PREFIX = "cfg_"  # the Train form's widgets: kept across pages and job views
UPLOAD = "dataset_upload"
USE_SAMPLE = "use_sample"
DATASET_NEW_NAME = "dataset_new_name"  # + the dataset's id
DATASET_RENAME = "dataset_rename"
DATASET_DELETE = "dataset_delete"
# Query parameters
JOB_PARAM = "job"
BAKEOFF_PARAM = "bakeoff"  # Train: the backbone bake-off on view (its job id), found again after a reload
SETTINGS_FROM = "settings_from"  # Train: fill the form with this run's settings ("train again")
RUN_PARAM = "run"
DATASET_PARAM = "dataset"
DEMO_PARAM = "demo"  # a Share link: ?demo=<run id>&key=<token> opens that one model alone (pages/demo.py)
KEY_PARAM = "key"

_routed = False  # whether app.py has run in this process (see page())


def start() -> None:
    """Called by the router on every run: gives the browser session its id; stops with a sentence when the
    workspace database cannot be used (locked, damaged), since every page reads from it."""
    global _routed
    _routed = True
    if SESSION_ID not in st.session_state:
        st.session_state[SESSION_ID] = uuid.uuid4().hex
        workspace.prune()
    try:
        db.check()
    except UserError as exc:
        error(exc, icon=":material/database:")
        st.stop()
    try:
        user()
    except access.SignInRefused as exc:
        error(exc, icon=":material/no_accounts:")
        st.button("Sign out", icon=":material/logout:", on_click=st.logout, key="sign_out_refused")
        st.stop()


def escape(text: object) -> str:
    """``text`` shown literally inside Markdown (st.markdown, st.error, captions): a name, a class, an error or
    anything from an address cannot become a link, an image, a colour directive or formatting, nor break the line."""
    out = _MARKDOWN.sub(r"\\\g<0>", " ".join(str(text).splitlines()))
    return _AUTOLINK.sub(r"\g<1>\\.", out)  # "www.x.org" would be made a link without any markup


def error(text: object, icon: str = ":material/error:") -> None:
    """``st.error`` of a sentence that may hold what a user typed or uploaded (see escape())."""
    st.error(escape(text), icon=icon)


def sign_in_enabled() -> bool:
    """Whether ``.streamlit/secrets.toml`` configures sign-in (an ``[auth]`` section for ``st.login``)."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: Streamlit raises its own not-found error
        return False


def user() -> str:
    """The signed-in user's key (core.workspace.access: issuer and subject), or ``access.GUEST`` ('') without sign-in.

    Raises:
        access.SignInRefused: the provider's answer cannot be trusted (start() shows it and offers to sign out).
    """
    try:
        if not st.user.is_logged_in:
            return access.GUEST
        claims = st.user.to_dict()
    except Exception:  # st.user without any sign-in configured
        return access.GUEST
    stamp = [claims.get("iss"), claims.get("sub"), claims.get("email")]
    held = st.session_state.get(USER)
    if isinstance(held, list) and held[:3] == stamp:
        return held[3]
    key = access.sign_in(claims)  # once per session and identity: records the e-mail shown for this user
    st.session_state[USER] = [*stamp, key]
    return key


def gate() -> None:
    """With sign-in on, the workspace is for signed-in users: a visitor without sign-in sees only the way in."""
    if not sign_in_enabled() or user():
        return
    st.title("Image classifier maker")
    st.info("Sign in to see this team's datasets, models and jobs.", icon=":material/login:")
    st.button("Sign in", icon=":material/login:", on_click=st.login, key="sign_in_gate")
    st.stop()


def account() -> None:
    """Sign in / out, in the sidebar, when sign-in is configured."""
    if not sign_in_enabled():
        return
    if user():
        shown = escape(access.display(user()))
        st.caption(f"Signed in as **{shown}**" + (" (admin)" if access.is_admin(user()) else ""))
        st.button("Sign out", icon=":material/logout:", on_click=st.logout, key="sign_out")
    else:
        st.caption("Signed out.")
        st.button("Sign in", icon=":material/login:", on_click=st.login, key="sign_in")


def page() -> None:
    """First call of every page script: make sure the page runs inside the router, then show a pending flash.

    Until the router's first ``st.navigation`` call in a server process, Streamlit takes a folder named ``pages/``
    beside the entry point for the page list: a shared link opened first after a server start would run that one
    page alone, narrow, with every script of the folder in the menu. Such a run runs the router instead (the
    address names the same page, which the router then runs), and ends.
    """
    inside_router()
    if flashed := st.session_state.pop(FLASH, None):
        message, failed = flashed
        if failed:
            error(message)
        else:
            st.success(escape(message), icon=":material/check_circle:")
    # The navigation menu drops the address's parameters: put the session's dataset back, so that a reload or a
    # copied link of any page still names it.
    if (held := _held_dataset_id()) and DATASET_PARAM not in st.query_params:
        st.query_params[DATASET_PARAM] = held


def inside_router() -> None:
    """Run the router instead of this page script when the router has not run yet in this process (see page());
    the demo page calls only this, since the rest of page() is for the app's own pages."""
    if not _routed:
        runpy.run_path(str(APP))
        st.stop()


def guarded(draw: Callable[..., None]) -> Callable[..., None]:
    """For a fragment's body: a user's error there (the workspace database locked or damaged while it redraws on
    its own timer, outside the page's run) is a sentence in its place, not a traceback."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> None:
        try:
            draw(*args, **kwargs)
        except UserError as exc:
            error(exc, icon=":material/error:")

    return wrapper


def flash(message: str, error: bool = False) -> None:
    """Show ``message`` at the top of the next run (a confirmation, or a refusal, that outlives the rerun it
    causes)."""
    st.session_state[FLASH] = (message, error)


def started(job_id: str) -> None:
    """Remember that this session started the job."""
    st.session_state[MY_JOBS] = [*st.session_state.get(MY_JOBS, []), job_id]


def started_here(job_id: str) -> bool:
    return job_id in st.session_state.get(MY_JOBS, ())


def session_dir() -> Path:
    return workspace.session_dir(st.session_state[SESSION_ID])


def _held_dataset_id() -> str:
    held = st.session_state.get(DATASET)
    return held.id if isinstance(held, Dataset) else str(held or "")


def set_dataset(ds: Dataset) -> None:
    """Work on the saved dataset ``ds`` from now on: in this session and in the address."""
    st.session_state[DATASET] = ds.id
    st.session_state[DATASET_OPENED] = ds
    st.query_params[DATASET_PARAM] = ds.id


def forget_dataset() -> None:
    """Work on no dataset (the one chosen was deleted)."""
    for key in (DATASET, DATASET_OPENED):
        st.session_state.pop(key, None)
    st.query_params.pop(DATASET_PARAM, None)


def dataset() -> Dataset | None:
    """The dataset this page works on: the address's ``?dataset=<id>``, else the session's; None when neither.

    It is opened once per session (reruns reuse it), and the address and the session are kept in step, so a
    reload, a new tab and a colleague's link land on the same dataset. An id that names no saved dataset (deleted,
    or a mistyped link) says so with ``st.error`` and gives None.
    """
    held = st.session_state.get(DATASET)
    if isinstance(held, Dataset):  # a Dataset put into the session directly (tests, tools)
        if not held.id:
            return held  # not a saved one: used as it is, the address cannot name it
        st.session_state[DATASET_OPENED] = held
    wanted = st.query_params.get(DATASET_PARAM) or _held_dataset_id()
    if not wanted:
        return None
    opened = st.session_state.get(DATASET_OPENED)
    try:
        if not (isinstance(opened, Dataset) and opened.id == wanted and records.exists(wanted)) or (
            opened.version and opened.version != versions.latest_number(wanted)  # a new version since: the newest
        ):
            opened = datasets.open_dataset(wanted)
    except records.UnknownDataset:
        # Only an id-shaped value is shown: anything else in a link could put markdown (a link) into the message.
        shown = f"**{wanted}**" if records.is_id(wanted) else "that the link names"
        st.error(
            f"There is no saved dataset {shown} on this server: it was deleted, or the link is mistyped. "
            "Pick one of the saved datasets on the Dataset page.",
            icon=":material/link_off:",
        )
        st.query_params.pop(DATASET_PARAM, None)
        if _held_dataset_id() == wanted:
            forget_dataset()
        return None
    except UserError as exc:  # damaged files, or the workspace database cannot be used
        error(exc, icon=":material/error:")
        return None
    set_dataset(opened)
    return opened


def wanted_run(runs: list[RunInfo], fallback: str | None = None) -> RunInfo | None:
    """The run the address names (``?run=``); an unknown id says so and offers the list instead.

    Returns the named run, else the ``fallback`` id's run, else the newest; None when there is no run.
    """
    wanted = st.query_params.get(RUN_PARAM)
    by_id = {r.id: r for r in runs}
    if wanted and wanted not in by_id:
        st.error(
            f"There is no saved run **{escape(wanted)}** on this server: it was deleted, or the link is mistyped. "
            "Pick one of the saved runs below.",
            icon=":material/link_off:",
        )
        st.query_params.pop(RUN_PARAM, None)
        wanted = None
    return by_id.get(wanted or fallback or "") or (runs[0] if runs else None)


def run_picker(runs: list[RunInfo], label: str = "Model", fallback: str | None = None) -> RunInfo:
    """A select box of the saved runs, starting at the one the address names; keeps the address in step."""
    first = wanted_run(runs, fallback)
    run = st.selectbox(label, runs, index=runs.index(first), format_func=run_label)
    st.query_params[RUN_PARAM] = run.id
    return run


def run_label(run: RunInfo) -> str:
    acc = f" · val acc {run.val_accuracy:.1%}" if run.val_accuracy is not None else ""
    return f"{run.id} · {run.dataset} · {plural(len(run.classes), 'class', 'classes')}{acc}"


def run_exists(run_id: str) -> bool:
    return find_run(run_id) is not None


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 epoch', '3 epochs', '1 class', '2 classes'."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = round(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class ProgressBar:
    """An ``st.progress`` fed by a core ``progress(done, total)`` callback, with counts and an ETA."""

    def __init__(self, label: str):
        self.label = label
        self.bar = st.progress(0.0, text=label)
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (total - done) if done else None
        self.bar.progress(
            min(done / max(total, 1), 1.0), text=f"{self.label}: {done:,}/{total:,} · ETA {duration(eta)}"
        )

    def empty(self) -> None:
        self.bar.empty()
