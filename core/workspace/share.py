"""Share one saved run as a demo link: a capability for that one model, checked when the link is opened.

    token = share(run_dir, user, expires_days=7)   # a new key, shown once; the link made before stops working
    sharing(run_dir)                               # Sharing(by, at, expires), or None when not shared (or expired)
    unshare(run_dir, user)                         # the link stops working
    run = open_shared(run_id, token)               # the RunInfo, or a ShareError with a sentence for the visitor

The key is ``secrets.token_urlsafe(16)`` (128 random bits). Only its sha256 is kept, in ``<run>/share.json``, so it
survives restarts, is deleted with the run, and neither someone who can read the run's folder nor the page can give
the key out again: the page shows it once, to whoever made it. Keys are compared in constant time. A link can
expire (``expires_days``); an expired link says so.

Sharing, sharing again (a new key: the old link stops working) and stopping are changes of the run, so only its
owner or an admin may do them (core.workspace.access); the page makes the link from the key (``?demo=<run
id>&key=<token>``, ui/share_views.py) and core knows nothing of addresses.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core import settings
from core.util.errors import UserError
from core.workspace import access, runs

SHARE_FILE = "share.json"  # in the run's folder: {"sha256": ..., "by": ..., "at": ..., "expires": epoch or null}
MAX_DAYS = 3650
REMOVED = "This model was removed from the server: ask whoever shared it for a new link."
INVALID = "This link is no longer valid: ask whoever shared it for a new one."
EXPIRED = "This link has expired: ask whoever shared it for a new one."


_uses: dict[str, collections.deque] = collections.defaultdict(collections.deque)
_uses_lock = threading.Lock()


def demo_rate() -> int:
    return settings.current().demo_per_minute


def take_answer(run_id: str, now: float | None = None) -> float:
    """Count one answer of the run's demo; 0.0 when it may answer now, else the seconds until it may.

    A demo link reaches people outside the team: every holder of it together gets ``demo_rate()`` answers a
    minute (a photo classified, or where the model looked), so no visitor can keep the server's CPU busy. The
    count is this server process's (a restart forgets it, which only gives a minute's allowance again).
    """
    now = time.monotonic() if now is None else now
    with _uses_lock:
        window = _uses[run_id]
        while window and now - window[0] >= 60:
            window.popleft()
        if len(window) >= demo_rate():
            return max(0.1, 60 - (now - window[0]))
        window.append(now)
        return 0.0


class ShareError(UserError):
    """A demo link that opens nothing: its run was removed, or the link was withdrawn, expired or mistyped."""


@dataclass(frozen=True)
class Sharing:
    digest: str  # sha256 of the key, hex
    by: str  # who shared it ('' = a guest)
    at: str  # when, ISO date and time
    expires: float | None  # epoch seconds, None = never

    @property
    def expired(self) -> bool:
        return self.expires is not None and time.time() >= self.expires


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(run_dir: str | os.PathLike) -> Sharing | None:
    try:
        data = runs.read_json(Path(run_dir) / SHARE_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    digest = data.get("sha256")
    if not isinstance(digest, str) and isinstance(data.get("token"), str) and data["token"]:
        digest = _digest(data["token"])  # a link shared before keys were kept hashed goes on working
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    expires = data.get("expires")
    expires = float(expires) if isinstance(expires, int | float) and math.isfinite(expires) else None
    return Sharing(digest, str(data.get("by") or ""), str(data.get("at") or ""), expires)


def sharing(run_dir: str | os.PathLike) -> Sharing | None:
    """How the run is shared, or None when it is not, its link expired, or its share file cannot be read."""
    found = _read(run_dir)
    return None if found is None or found.expired else found


def share(run_dir: str | os.PathLike, user: str = access.GUEST, expires_days: float | None = None) -> str:
    """Share the run (a saved one, or ``UserError``) and return its new key, to be shown once.

    A run shared before gets a new key and its old link stops working. Only the run's owner or an admin may.

    Raises:
        NotAllowed: ``user`` may not change the run.
        UserError: the run is not a saved one, or ``expires_days`` is not a positive number of days.
    """
    info = runs.read_run(run_dir)
    access.check(user, info.owner, f"share the run {info.id}")
    expires = None
    if expires_days is not None:
        if not (isinstance(expires_days, int | float) and 0 < expires_days <= MAX_DAYS):
            raise UserError(f"A link expires after 1 to {MAX_DAYS} days (you asked for {expires_days!r}).")
        expires = time.time() + float(expires_days) * 86400
    token = secrets.token_urlsafe(16)
    record = {"sha256": _digest(token), "by": user, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "expires": expires}
    runs.write_json(info.path / SHARE_FILE, record)
    return token


def unshare(run_dir: str | os.PathLike, user: str = access.GUEST) -> None:
    """Stop sharing the run: its link stops working. Only its owner or an admin may (``core.workspace.access``)."""
    info = runs.read_run(run_dir)
    access.check(user, info.owner, f"stop sharing the run {info.id}")
    (info.path / SHARE_FILE).unlink(missing_ok=True)


def open_shared(run_id: str, token: str) -> runs.RunInfo:
    """The run a demo link names, when the link's key is the run's.

    Raises:
        ShareError: no such run in the runs folder (deleted, or an id that is no folder name there: core.workspace.runs'
            own lookup refuses anything outside it), a key that is not the run's (wrong, or withdrawn), or an
            expired link.
    """
    run = runs.find_run(run_id) if isinstance(run_id, str) else None
    if run is None:
        raise ShareError(REMOVED)
    found = _read(run.path)
    given = _digest(token) if isinstance(token, str) and token else ""
    # Constant time: how long a refusal takes says nothing about how much of a guessed key was right.
    if found is None or not given or not hmac.compare_digest(found.digest, given):
        raise ShareError(INVALID)
    if found.expired:
        raise ShareError(EXPIRED)
    return run
