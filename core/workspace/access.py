"""Who may do what: one rule, asked by every change of state in core, and who a signed-in user is.

    user = access.sign_in(claims)                 # the provider's claims (st.user) -> the user's key
    access.check(user, owner, "delete the run X")  # raises NotAllowed unless user may; every mutation asks this
    access.may_change(user, owner)                 # the same rule as a bool, to hide buttons
    access.display(owner)                          # "ann@example.com", "a guest", ...

**Who.** A guest (``GUEST``, "") is whoever is not signed in. A signed-in user is the provider's subject and issuer
(``"<issuer>|<subject>"``): an e-mail can change or be reused, a subject cannot. The e-mail is kept for display and
for the admin list, and only when it can be trusted: a provider that says ``email_verified: false`` is refused, and
an address that is not in Unicode's NFKC form or mixes scripts (a Kelvin sign for a "K", a Cyrillic "а" among Latin
letters) is shown but never matched against anyone. Addresses are compared NFKC + casefold. A user key that is an
e-mail itself (the CLI, records made before subjects were kept) is matched by that e-mail.

**The rule.** ``check(user, owner, action)``: the owner of a thing and the admins may change it; what a guest made
is everyone's (without sign-in everyone is a guest of one shared workspace). Admins are the e-mails in
``$CLASSIFIER_ADMINS`` (comma-separated); Streamlit exports a root-level ``CLASSIFIER_ADMINS = "..."`` in
``.streamlit/secrets.toml`` as that variable. Capabilities (a demo link: core.workspace.share) are not users: holding
one lets a visitor do its one thing, and its module checks it.
"""

from __future__ import annotations

import contextlib
import time
import unicodedata
from collections.abc import Mapping

from core import settings
from core.util.errors import UserError
from core.workspace import db

GUEST = ""
SEP = "|"  # between issuer and subject in a user's key; neither an e-mail nor a subject holds it in practice
OPERATOR = f"cli{SEP}operator"  # the server's command line (python -m core): whoever has a shell there is an admin


class NotAllowed(UserError):
    """The user may not change a thing someone else owns."""


class SignInRefused(UserError):
    """The provider's answer does not say who the user is in a way this server can trust."""


# ---------------------------------------------------------------------------------------------- e-mails


def _script(ch: str) -> str | None:
    """The script of a letter ("LATIN", "CYRILLIC", ...), None for digits, punctuation and symbols."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def email_problem(text: str) -> str | None:
    """Why the address cannot be trusted to name one person, or None when it can."""
    if not text or "@" not in text:
        return "it is not an e-mail address"
    if any(unicodedata.category(ch)[0] in "CZ" for ch in text):
        return "it has spaces or control characters"
    if unicodedata.normalize("NFKC", text) != text:
        return "it uses look-alike (compatibility) characters"
    for part in text.replace("@", ".").split("."):
        if len({s for ch in part if (s := _script(ch))}) > 1:
            return "it mixes letters of different scripts"
    return None


def canonical_email(text: str) -> str | None:
    """The address as compared (NFKC + casefold), or None when it cannot be trusted (``email_problem``)."""
    text = str(text or "").strip()
    if email_problem(text) is not None:
        return None
    return unicodedata.normalize("NFKC", text.casefold())


def admins() -> set[str]:
    found = (canonical_email(a) for a in settings.current().admins)
    return {a for a in found if a}


# ---------------------------------------------------------------------------------------------- users


def _claim(claims: Mapping, name: str) -> str:
    value = claims.get(name)
    return value.strip() if isinstance(value, str) else ""


def identity(claims: Mapping) -> tuple[str, str]:
    """The user's key and the e-mail to show, from an OpenID provider's claims.

    Raises:
        SignInRefused: no subject or issuer, or an e-mail the provider says it has not verified.
    """
    sub, iss = _claim(claims, "sub"), _claim(claims, "iss")
    if not sub or not iss:
        raise SignInRefused("The sign-in provider did not say who you are (no subject or issuer); sign in again.")
    email = _claim(claims, "email")
    verified = claims.get("email_verified", True)
    if email and verified not in (True, "true", "True", 1):
        raise SignInRefused(
            f"Your sign-in provider says the address {email!r} is not verified: verify it with them, then sign in "
            "again."
        )
    return f"{iss}{SEP}{sub}", email


def sign_in(claims: Mapping) -> str:
    """Remember who the claims name (their e-mail, for display and the admin list) and return the user's key."""
    key, email = identity(claims)
    with db.connect(write=True) as con:
        con.execute(
            "INSERT INTO users (key, email, seen) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET email = excluded.email, seen = excluded.seen",
            (key, email, time.time()),
        )
    return key


def email_of(user: str) -> str:
    """The e-mail shown for a user key ('' for a guest or an unknown user)."""
    if not user or user == OPERATOR:
        return ""
    if SEP not in user:
        return user  # a key that is an e-mail: the CLI, older records
    with contextlib.suppress(UserError), db.connect() as con:
        row = con.execute("SELECT email FROM users WHERE key = ?", (user,)).fetchone()
        return row["email"] if row else ""
    return ""


def display(owner: str) -> str:
    """How a user is named on a page: their e-mail, or 'a guest'."""
    if not owner:
        return "a guest"
    if owner == OPERATOR:
        return "the server's command line"
    return email_of(owner) or "a signed-in user"


def is_admin(user: str) -> bool:
    if user == OPERATOR:
        return True
    trusted = canonical_email(email_of(user))
    return trusted is not None and trusted in admins()


def same_user(user: str, owner: str) -> bool:
    """Whether ``user`` is the one who made what ``owner`` names (a guest is never anyone else's same user)."""
    return bool(user) and bool(owner) and _same(str(user), str(owner))


def _same(user: str, owner: str) -> bool:
    if user == owner:
        return True
    # An owner recorded by e-mail (the CLI, older records) is the user whose trusted e-mail it is.
    mine, theirs = canonical_email(email_of(user)), canonical_email(owner) if SEP not in owner else None
    return mine is not None and mine == theirs


# ---------------------------------------------------------------------------------------------- the rule


def may_change(user: str, owner: str) -> bool:
    """Whether ``user`` may change (stop, delete, share, evaluate, export, label, ...) what ``owner`` made."""
    user, owner = str(user or ""), str(owner or "")
    return owner == GUEST or _same(user, owner) or is_admin(user)


def check(user: str, owner: str, action: str) -> None:
    """Raise ``NotAllowed`` with a sentence when ``user`` may not ``action`` (e.g. "delete the run X")."""
    if not may_change(user, owner):
        who = "you are not signed in" if not user else f"you are signed in as {display(user)}"
        raise NotAllowed(f"Only {display(owner)} or an admin may {action}; {who}.")
