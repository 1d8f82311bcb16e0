"""Share one saved run as a demo link: a secret key kept in the run's folder, checked when the link is opened.

    token = share(run_dir, user)          # the run's key: the same one on every call until it is unshared
    link_token(run_dir)                   # that key, or None when the run is not shared
    sharing(run_dir)                      # Sharing(token, by, at), or None
    unshare(run_dir, user)                # links handed out stop working (only the owner or an admin may)
    run = open_shared(run_id, token)      # the RunInfo, or a ShareError with a sentence for the visitor

The key is ``secrets.token_urlsafe(16)`` (128 random bits) in ``<run>/share.json``, so it survives restarts, is
deleted with the run, and nobody who was not given the link can guess it. The page makes the link from it
(``?demo=<run id>&key=<token>``, ui/share_views.py); core knows nothing of addresses.

Anyone who may see a run may share it: the link shows that one model read-only, which everyone on the server can
already see. Withdrawing a link breaks it for whoever holds it, so that is the owner's (or an admin's) decision.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from core import access, runs
from core.errors import UserError

SHARE_FILE = "share.json"  # in the run's folder: {"token": ..., "by": ..., "at": ...}
REMOVED = "This model was removed from the server: ask whoever shared it for a new link."
INVALID = "This link is no longer valid: ask whoever shared it for a new one."


class ShareError(UserError):
    """A demo link that opens nothing: its run was removed, or the link was withdrawn or mistyped."""


@dataclass(frozen=True)
class Sharing:
    token: str
    by: str  # who shared it ('' = a guest)
    at: str  # when, ISO date and time


def sharing(run_dir: str | os.PathLike) -> Sharing | None:
    """How the run is shared, or None when it is not (or its share file cannot be read: then no link works)."""
    try:
        data = runs.read_json(Path(run_dir) / SHARE_FILE)
    except (OSError, ValueError):
        return None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        return None
    return Sharing(token, str(data.get("by") or ""), str(data.get("at") or ""))


def link_token(run_dir: str | os.PathLike) -> str | None:
    """The run's demo key, or None when it is not shared."""
    found = sharing(run_dir)
    return found.token if found else None


def share(run_dir: str | os.PathLike, user: str = access.GUEST) -> str:
    """Share the run (a saved one, or ``UserError``) and return its key; an already shared run keeps its key, so
    every link handed out so far goes on working."""
    info = runs.read_run(run_dir)
    if (token := link_token(info.path)) is not None:
        return token
    record = {"token": secrets.token_urlsafe(16), "by": user, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    runs.write_json(info.path / SHARE_FILE, record)
    return record["token"]


def unshare(run_dir: str | os.PathLike, user: str = access.GUEST) -> None:
    """Stop sharing the run: every link to it stops working. Only its owner or an admin may (``core.access``);
    sharing it again makes a new key, so the old links stay dead."""
    info = runs.read_run(run_dir)
    access.check(user, info.owner, f"stop sharing the run {info.id}")
    (info.path / SHARE_FILE).unlink(missing_ok=True)


def open_shared(run_id: str, token: str) -> runs.RunInfo:
    """The run a demo link names, when the link's key is the run's.

    Raises:
        ShareError: no such run in the runs folder (deleted, or an id that is no folder name there: core.runs'
            own lookup refuses anything outside it), or a key that is not the run's (wrong, or withdrawn).
    """
    run = runs.find_run(run_id) if isinstance(run_id, str) else None
    if run is None:
        raise ShareError(REMOVED)
    expected = link_token(run.path)
    given = token.encode() if isinstance(token, str) else b""
    # Constant time: how long a refusal takes says nothing about how much of a guessed key was right.
    if expected is None or not given or not hmac.compare_digest(expected.encode(), given):
        raise ShareError(INVALID)
    return run
