"""Share a run as a demo link: the control on the Runs page and on a finished training.

    share_panel(run)              # Share; once shared: the link (copyable), Open the demo, Stop sharing
    demo_link(run.id, token)      # <this app's address>/?demo=<run id>&key=<token>

The key lives in the run's folder (core.share), so the panel shows the same link after a reload, in another tab
and to a colleague; pages/demo.py is what the link opens.
"""

from __future__ import annotations

from urllib.parse import urlencode, urljoin

import streamlit as st

from core import UserError, access, share
from core.runs import RunInfo
from ui import session
from ui.session import DEMO_PARAM, KEY_PARAM, flash

# Widget keys (+ the run's id)
SHARE = "share"
UNSHARE = "unshare"


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
    try:
        share.share(run.path, session.user())
    except UserError as exc:  # deleted by someone else since the page was drawn
        flash(str(exc), error=True)


def _unshare(run: RunInfo) -> None:
    try:
        share.unshare(run.path, session.user())
    except UserError as exc:
        flash(str(exc), error=True)
    else:
        flash(f"Stopped sharing {run.id}: its old link no longer opens it.")


def share_panel(run: RunInfo) -> None:
    """Share: a link to a page with this model alone, for someone who should see nothing else."""
    shared = share.sharing(run.path)
    if shared is None:
        st.button(
            "Share", icon=":material/share:", key=f"{SHARE}_{run.id}", on_click=_share, args=(run,),
            help="A link to a page with this model alone: a photo in, its answer out, nothing else to see or change.",
        )  # fmt: skip
        return
    link = demo_link(run.id, shared.token)
    by = shared.by or "a guest"
    st.markdown(
        f"**Shared** by {by}{' on ' + shared.at.replace('T', ' ')[:16] if shared.at else ''}: whoever has this link "
        "sees this model alone and can classify photos with it, nothing else."
    )
    st.code(link, language=None, wrap_lines=True)
    left, right = st.columns(2)
    left.link_button("Open the demo", link, icon=":material/open_in_new:")
    if not access.may_change(session.user(), run.owner):
        right.caption(f"Trained by {run.owner}: only they or an admin may stop sharing it.")
        return
    # Asked once, as deleting is: a withdrawn link is dead for good (sharing again makes a new one).
    with right.popover("Stop sharing", icon=":material/link_off:"):
        st.write("Stop sharing? Links already handed out stop working; sharing again makes a new link.")
        st.button("Yes, stop sharing", key=f"{UNSHARE}_{run.id}", on_click=_unshare, args=(run,))
