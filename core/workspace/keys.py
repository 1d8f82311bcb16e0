"""API keys: capabilities that let a program classify with one run (or, an admin's, with all of one owner's runs).

    key, token = create("ants-2026", user, name="shop scanner", expires_days=90)   # the token is shown once
    list_keys(user)                      # the keys of the runs ``user`` may change (an admin: all)
    revoke(key.id, user)                 # it stops working at once
    key = authenticate(token, run_id)    # the key, its use counted; NoKey / UnknownKey / KeyNotAllowed otherwise

A token is ``ick_<id>_<secret>``: the id (not secret) names the key in lists and in the server's log, the secret is
``secrets.token_urlsafe(24)`` (192 random bits). Only the sha256 of the whole token is kept (the ``api_keys`` table of
the workspace database), compared in constant time, so nobody who can read the database, nor the page that made it,
can give the key out again. Every use sets ``last_used`` and counts one in ``uses``.

Making and revoking a key are changes of the run, so they ask the one rule (``core.workspace.access``): the run's
owner or an admin, and for a guest's run anyone. A key scoped to all of one owner's runs is an admin's to make. A
key's holder is not a user: the key lets it do exactly what the API allows with its run(s) and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import unicodedata
from dataclasses import dataclass

from core.util.errors import UserError
from core.workspace import access, db, runs

PREFIX = "ick"
MAX_DAYS = 3650
MAX_NAME = 100
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


class NoKey(UserError):
    """The request carried no key."""


class UnknownKey(UserError):
    """The key is not one this server made (mistyped, or made by another server)."""


class KeyNotAllowed(UserError):
    """The key is known but may not do this: revoked, expired, or for another run."""


class UnknownRun(UserError):
    """The run a key's holder asked for is not (or no longer) on this server."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    run_id: str  # '' = every run of scope_owner
    scope_owner: str
    created_by: str
    created: float
    expires: float | None
    revoked: float | None
    last_used: float | None
    uses: int
    store: bool  # what it is sent is kept for review

    @property
    def state(self) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and time.time() >= self.expires:
            return "expired"
        return "active"

    @property
    def scope(self) -> str:
        """The run(s) it may use, in words."""
        return f"the run {self.run_id}" if self.run_id else f"every run of {access.display(self.scope_owner)}"

    def to_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "run": self.run_id or None, "scope": self.scope, "state": self.state,
            "created_by": access.display(self.created_by), "created": self.created, "expires": self.expires,
            "last_used": self.last_used, "uses": self.uses, "store_predictions": self.store,
        }  # fmt: skip


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _row(row) -> ApiKey:
    return ApiKey(
        row["id"], row["name"], row["run_id"], row["scope_owner"], row["created_by"], row["created"], row["expires"],
        row["revoked"], row["last_used"], row["uses"], bool(row["store"]),
    )  # fmt: skip


def _clean_name(name: str) -> str:
    text = unicodedata.normalize("NFC", str(name or "")).strip()
    if not text:
        raise UserError("Give the key a name that says who uses it (e.g. 'shop scanner').")
    if len(text) > MAX_NAME or any(unicodedata.category(ch)[0] == "C" for ch in text):
        raise UserError(f"A key's name is one line of at most {MAX_NAME} characters.")
    return text


def _expiry(expires_days: float | None) -> float | None:
    if expires_days is None:
        return None
    ok = isinstance(expires_days, int | float) and math.isfinite(expires_days) and 0 < expires_days <= MAX_DAYS
    if not ok:
        raise UserError(f"A key expires after 1 to {MAX_DAYS} days (you asked for {expires_days!r}).")
    return time.time() + float(expires_days) * 86400


def create(
    run_id: str,
    user: str,
    name: str,
    expires_days: float | None = None,
    store: bool = False,
    all_runs: bool = False,
) -> tuple[ApiKey, str]:
    """Make a key for the run (``all_runs``: for every run of the run's owner) and return it with its token, which
    is shown once and never again.

    Raises:
        UnknownRun: no such run. NotAllowed: ``user`` may not change the run (or, for ``all_runs``, is no admin).
        UserError: an empty or overlong name, or a bad number of days.
    """
    run = runs.find_run(run_id) if isinstance(run_id, str) and run_id else None
    if run is None:
        raise UnknownRun(f"There is no run {run_id!r} on this server.")
    access.check(user, run.owner, f"make an API key for the run {run.id}")
    if all_runs and not access.is_admin(user):
        raise access.NotAllowed("Only an admin may make a key for all of one owner's runs.")
    name, expires = _clean_name(name), _expiry(expires_days)
    key_id = secrets.token_hex(5)
    token = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"
    with db.connect(write=True) as con:
        con.execute(
            "INSERT INTO api_keys (id, name, digest, run_id, scope_owner, created_by, created, expires, store) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key_id,
                name,
                _digest(token),
                "" if all_runs else run.id,
                run.owner,
                user,
                time.time(),
                expires,
                int(store),
            ),
        )
    return get(key_id), token


def get(key_id: str) -> ApiKey:
    with db.connect() as con:
        row = con.execute("SELECT * FROM api_keys WHERE id = ?", (str(key_id),)).fetchone()
    if row is None:
        raise UserError(f"There is no API key {key_id!r} on this server.")
    return _row(row)


def list_keys(user: str) -> list[ApiKey]:
    """The keys ``user`` may see and revoke (those of runs they may change), newest first."""
    with db.connect() as con:
        rows = con.execute("SELECT * FROM api_keys ORDER BY created DESC").fetchall()
    return [k for k in map(_row, rows) if access.may_change(user, k.scope_owner)]


def keys_of_run(run_id: str, user: str) -> list[ApiKey]:
    """The keys scoped to this one run that ``user`` may see."""
    return [k for k in list_keys(user) if k.run_id == run_id]


def revoke(key_id: str, user: str) -> ApiKey:
    """Stop a key at once. Only the owner of its run(s) or an admin may (``core.workspace.access``)."""
    key = get(key_id)
    access.check(user, key.scope_owner, f"revoke the API key {key.id} ({key.name})")
    if key.revoked is None:
        with db.connect(write=True) as con:
            con.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (time.time(), key.id))
    return get(key.id)


def _lookup(token: str) -> ApiKey:
    parts = token.split("_", 2) if isinstance(token, str) else []
    key_id = parts[1] if len(parts) == 3 and parts[0] == PREFIX else ""
    row = None
    if key_id:
        with db.connect() as con:
            row = con.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    # Constant time, and the same work for an unknown id: a refusal's timing says nothing about the secret.
    same = hmac.compare_digest(row["digest"] if row else _DUMMY, _digest(token))
    if row is None or not same:
        raise UnknownKey("This API key is not known to this server: check that it was copied whole.")
    return _row(row)


def authenticate(token: str | None, run_id: str) -> ApiKey:
    """The key ``token`` names, when it may use the run ``run_id``; its use is counted.

    Raises:
        NoKey: no token. UnknownKey: not a key of this server. KeyNotAllowed: revoked, expired, or for another run.
        UnknownRun: the key may use the runs of an owner, and there is no such run of theirs.
    """
    if not token:
        raise NoKey("This needs an API key: send it as 'Authorization: Bearer <key>'.")
    key = _lookup(token)
    if key.state == "revoked":
        raise KeyNotAllowed(f"The API key {key.id} ({key.name}) was revoked: ask the run's owner for a new one.")
    if key.state == "expired":
        raise KeyNotAllowed(f"The API key {key.id} ({key.name}) has expired: ask the run's owner for a new one.")
    if key.run_id and key.run_id != run_id:
        raise KeyNotAllowed(f"The API key {key.id} may only use the run {key.run_id}, not {run_id!r}.")
    run = runs.find_run(run_id) if isinstance(run_id, str) and run_id else None
    if run is None:
        raise UnknownRun(f"There is no run {run_id!r} on this server (it may have been deleted).")
    if not key.run_id and not (run.owner == key.scope_owner or access.same_user(run.owner, key.scope_owner)):
        raise KeyNotAllowed(f"The API key {key.id} may only use the runs of {access.display(key.scope_owner)}.")
    with db.connect(write=True) as con:
        con.execute("UPDATE api_keys SET last_used = ?, uses = uses + 1 WHERE id = ?", (time.time(), key.id))
    return key
