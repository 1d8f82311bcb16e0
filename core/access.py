"""Who may change what: owners and admins.

    access.check(user, owner, "delete the run 2026…-ants-1a2b")   # raises NotAllowed unless user may
    access.may_change(user, owner)                                # the same as a bool, to hide buttons

A user is their e-mail when signed in, or ``GUEST`` ("") without sign-in. Without sign-in everyone is a guest of
one shared workspace and may change everything (pages then ask once before anything destructive). With sign-in,
only a thing's owner or an admin may stop it or delete it; what guests made before sign-in was turned on stays
everyone's. Admins are listed in ``$CLASSIFIER_ADMINS`` (comma-separated e-mails); Streamlit also exports a
root-level ``CLASSIFIER_ADMINS = "..."`` in ``.streamlit/secrets.toml`` as that variable.
"""

from __future__ import annotations

import os

from core.errors import UserError

ADMINS_ENV = "CLASSIFIER_ADMINS"
GUEST = ""


class NotAllowed(UserError):
    """The user may not change a thing someone else owns."""


def admins() -> set[str]:
    return {a.strip().lower() for a in os.environ.get(ADMINS_ENV, "").split(",") if a.strip()}


def is_admin(user: str) -> bool:
    return bool(user) and user.lower() in admins()


def may_change(user: str, owner: str) -> bool:
    """Whether ``user`` may stop or delete what ``owner`` made."""
    return owner == GUEST or user.lower() == owner.lower() or is_admin(user)


def check(user: str, owner: str, action: str) -> None:
    """Raise ``NotAllowed`` with a sentence when ``user`` may not ``action`` (e.g. "delete the run X")."""
    if not may_change(user, owner):
        who = "you are not signed in" if user == GUEST else f"you are signed in as {user}"
        raise NotAllowed(f"Only {owner} or an admin may {action}; {who}.")
