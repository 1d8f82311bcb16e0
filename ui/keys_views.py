"""API keys for one run, on the Runs page: its owner (or an admin) makes, sees and revokes them.

    keys_panel(run)     # the run's keys (name, state, last used, uses); Make a key; the new key once, with a curl call

The server keeps only a fingerprint of a key (core.workspace.keys), so a new key is shown once, in the session that
made it; whoever lost it makes another and revokes the old one.
"""

from __future__ import annotations

import time
from urllib.parse import urljoin

import pandas as pd
import streamlit as st

from core.util.errors import UserError
from core.workspace import access, keys
from core.workspace.runs import RunInfo
from ui import session
from ui.session import flash

# Widget keys (+ the run's id)
KEY_NAME = "api_key_name"
KEY_EXPIRES = "api_key_expires"
KEY_STORE = "api_key_store"
KEY_MAKE = "api_key_make"
KEY_REVOKE = "api_key_revoke"
NEW_KEY = "api_new_key"  # session state: the key just made, shown once in this session
EXPIRY_DAYS = {"30 days": 30, "90 days": 90, "1 year": 365, "no time limit": None}


def api_url(run_id: str) -> str:
    """The run's predict address as this browser reaches the app (relative outside a browser)."""
    path = f"./api/v1/runs/{run_id}/predict"
    here = st.context.url
    return urljoin(here, path) if here else path


def _make(run: RunInfo) -> None:
    state = st.session_state
    try:
        _, token = keys.create(
            run.id, session.user(), state.get(f"{KEY_NAME}_{run.id}", ""),
            expires_days=EXPIRY_DAYS.get(state.get(f"{KEY_EXPIRES}_{run.id}")),
            store=bool(state.get(f"{KEY_STORE}_{run.id}")),
        )  # fmt: skip
    except UserError as exc:
        flash(str(exc), error=True)
    else:
        state[f"{NEW_KEY}_{run.id}"] = token


def _revoke(run: RunInfo, key_id: str) -> None:
    try:
        key = keys.revoke(key_id, session.user())
    except UserError as exc:
        flash(str(exc), error=True)
    else:
        flash(f"API key {key.id} ({key.name}) revoked: it no longer works.")


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "never"


def keys_panel(run: RunInfo) -> None:
    """The run's API keys, for its owner and admins; nothing for anyone else."""
    if not access.may_change(session.user(), run.owner):
        return
    with st.expander("API keys: classify with this run from your own code", icon=":material/key:"):
        token = st.session_state.get(f"{NEW_KEY}_{run.id}")
        if token:
            st.caption("Copy the key now: the server keeps only a fingerprint of it, so it is not shown again.")
            st.code(token, language=None)
            st.code(f'curl -H "Authorization: Bearer {token}" -F files=@photo.jpg {api_url(run.id)}', language="bash")
        found = keys.keys_of_run(run.id, session.user())
        if found:
            st.dataframe(pd.DataFrame([
                {"id": k.id, "name": k.name, "state": k.state, "created": _when(k.created),
                 "expires": _when(k.expires) if k.expires else "", "last used": _when(k.last_used), "uses": k.uses,
                 "keeps images": "yes" if k.store else ""} for k in found]), hide_index=True)  # fmt: skip
            active = [k for k in found if k.state == "active"]
            if active:
                left, right = st.columns([3, 1], vertical_alignment="bottom")
                choice = left.selectbox(
                    "Revoke a key", [f"{k.id} ({k.name})" for k in active], key=f"{KEY_REVOKE}_pick_{run.id}"
                )
                right.button("Revoke", key=f"{KEY_REVOKE}_{run.id}", on_click=_revoke,
                             args=(run, choice.split(" ", 1)[0]), icon=":material/key_off:")  # fmt: skip
        st.text_input("Name (who or what uses it)", key=f"{KEY_NAME}_{run.id}", placeholder="shop scanner")
        st.selectbox("It works for", list(EXPIRY_DAYS), key=f"{KEY_EXPIRES}_{run.id}", index=1)
        st.checkbox("Keep the images it sends for review (they go to this dataset's review queue)",
                    key=f"{KEY_STORE}_{run.id}", disabled=not run.dataset_id)  # fmt: skip
        st.button("Make a key", key=f"{KEY_MAKE}_{run.id}", on_click=_make, args=(run,), icon=":material/key:")
