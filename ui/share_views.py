"""Share a run as a demo link: the control on the Runs page and on a finished training.

    share_panel(run)              # Share (for the run's owner and admins); once shared: who and until when, the new
                                  # link once, Open the demo, Make a new link, Stop sharing
    demo_link(run.id, token)      # <this app's address>/?demo=<run id>&key=<token>

The server keeps only a fingerprint of a link's key (core.workspace.share), so the link is shown once, in the session
that
made it, and never to anyone else: a visitor of the Runs page cannot pick up a link that was meant for a stakeholder.
Whoever lost it makes a new one, and the old link stops working. pages/demo.py is what the link opens.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode, urljoin

import streamlit as st

from core.util.errors import UserError
from core.workspace import access, share
from core.workspace.runs import RunInfo
from ui import session
from ui.session import DEMO_PARAM, KEY_PARAM, flash

# Widget keys (+ the run's id)
SHARE = "share"
UNSHARE = "unshare"
EXPIRES = "share_expires"
NEW_LINK = "share_new_link"  # session state: the key just made, shown once in this session
EXPIRY_DAYS = {"1 day": 1, "7 days": 7, "30 days": 30, "90 days": 90, "no time limit": None}


def demo_link(run_id: str, token: str) -> str:
    """The demo's absolute address as this browser reaches the app, or a relative one outside a browser.

    ``st.context.url`` is the current page's address without its query (``http://host/base/runs``): the Share
    control is only on pages below the app's root (Runs, Train), so the demo, which is the root with its query, is
    their sibling ``./?demo=…``; that keeps any ``server.baseUrlPath`` the app is served under.
    """
    query = "./?" + urlencode({DEMO_PARAM: run_id, KEY_PARAM: token})
    here = st.context.url  # None when no browser sent one (AppTest)
    return urljoin(here, query) if here else query


def _share(run: RunInfo) -> None:
    days = st.session_state.get(f"{EXPIRES}_{run.id}")
    try:
        token = share.share(run.path, session.user(), expires_days=EXPIRY_DAYS.get(days))
    except UserError as exc:  # deleted by someone else since the page was drawn, or not theirs
        flash(str(exc), error=True)
    else:
        st.session_state[f"{NEW_LINK}_{run.id}"] = token


def _unshare(run: RunInfo) -> None:
    try:
        share.unshare(run.path, session.user())
    except UserError as exc:
        flash(str(exc), error=True)
    else:
        st.session_state.pop(f"{NEW_LINK}_{run.id}", None)
        flash(f"Stopped sharing {run.id}: its link no longer opens it.")


def _share_button(run: RunInfo, label: str) -> None:
    st.selectbox("The link works for", list(EXPIRY_DAYS), key=f"{EXPIRES}_{run.id}", index=2)
    st.button(
        label, icon=":material/share:", key=f"{SHARE}_{run.id}", on_click=_share, args=(run,),
        help="A link to a page with this model alone: a photo in, its answer out, nothing else to see or change.",
    )  # fmt: skip


def share_panel(run: RunInfo) -> None:
    """Share: a link to a page with this model alone, for someone who should see nothing else."""
    shared = share.sharing(run.path)
    allowed = access.may_change(session.user(), run.owner)
    if shared is None:
        st.session_state.pop(f"{NEW_LINK}_{run.id}", None)
        if allowed:
            _share_button(run, "Share")
        return
    until = f", until {time.strftime('%Y-%m-%d %H:%M', time.localtime(shared.expires))}" if shared.expires else ""
    when = f" on {shared.at.replace('T', ' ')[:16]}" if shared.at else ""
    st.markdown(
        f"**Shared** by {session.escape(access.display(shared.by))}{when}{until}: whoever has the link sees this "
        "model alone and can classify photos with it, nothing else."
    )
    if not allowed:
        owner = session.escape(access.display(run.owner))
        st.caption(f"Trained by {owner}: only they or an admin may see its link, make a new one or stop sharing it.")
        return
    token = st.session_state.get(f"{NEW_LINK}_{run.id}")
    if token:
        link = demo_link(run.id, token)
        st.caption("Copy the link now: the server keeps only a fingerprint of it, so it is not shown again.")
        st.code(link, language=None, wrap_lines=True)
        st.link_button("Open the demo", link, icon=":material/open_in_new:")
    left, right = st.columns(2)
    with left.popover("Make a new link", icon=":material/link:"):
        st.write("A new link replaces the old one: the old link stops working.")
        _share_button(run, "Make the new link")
    # Asked once, as deleting is: a withdrawn link is dead for good (sharing again makes a new one).
    with right.popover("Stop sharing", icon=":material/link_off:"):
        st.write("Stop sharing? The link handed out stops working; sharing again makes a new link.")
        st.button("Yes, stop sharing", key=f"{UNSHARE}_{run.id}", on_click=_unshare, args=(run,))
