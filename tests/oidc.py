"""Sign in to a Streamlit app in tests: a local OpenID provider (``oidc-provider-mock``) and a real browser.

``st.login()`` sends the browser to an OpenID Connect provider and back to ``/oauth2callback``. Here the provider is
``oidc-provider-mock`` served on a free loopback port inside the test process: it accepts any client id and secret,
and its login form signs in whoever's ``sub`` is typed, with the claim ``email`` equal to that ``sub`` (so typing an
e-mail makes it ``st.user.email``). Nothing leaves the machine::

    from oidc import provider, sign_in, sign_out, write_secrets

    with provider() as issuer:
        flags = write_secrets(tmp_path, port, issuer, CLASSIFIER_ADMINS="admin@example.com")
        # start: python -m streamlit run app.py --server.port PORT --server.address 127.0.0.1 *flags
        page.goto(f"http://127.0.0.1:{port}")
        sign_in(page, "a@example.com")      # clicks "Sign in", types the e-mail at the provider, back on the app
        sign_out(page)                      # clicks "Sign out" (st.logout()), confirms at the provider, back

The browser must open the app at the origin of ``redirect_uri`` (``http://127.0.0.1:PORT`` by default): Streamlit
only trusts its identity cookie there. Each Playwright browser context is its own signed-in user.
"""

from __future__ import annotations

import secrets
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import werkzeug.serving

# Imported silenced: the mock uses Authlib APIs that Authlib deprecates, and Authlib's first import puts an "always"
# filter for its warnings in front of pytest's. So: Authlib first, our "ignore" in front of its filter, and the block
# drops both afterwards.
with warnings.catch_warnings():
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    import oidc_provider_mock

USER_COOKIE = "_streamlit_user"  # Streamlit's signed identity cookie, set by /oauth2callback


@contextmanager
def provider(host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an OpenID provider on a free port of ``host`` in a background thread; yield its issuer URL.

    In-process rather than a subprocess: port 0 picks a free port without a race, and nothing outlives the test.
    """
    server = werkzeug.serving.make_server(host, 0, oidc_provider_mock.app(), threaded=True)
    # Daemon, so a stuck request can never keep pytest from exiting; the mock's page links a CDN stylesheet, which
    # fails fast offline and only changes its looks.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        # The issuer is the host the Streamlit server fetches metadata from: the mock writes it into the ID token's
        # ``iss`` from the request's Host, and Authlib checks the two match.
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_secrets(folder: Path, port: int, issuer: str, *, host: str = "127.0.0.1", **root: str) -> list[str]:
    """Write ``folder/secrets.toml`` for a Streamlit server on ``host:port``; return the flags for ``streamlit run``.

    The flags point ``secrets.files`` at this file only, so the checkout's own ``.streamlit/secrets.toml`` is not
    read. ``root`` adds root-level secrets, which Streamlit also exports as environment variables
    (e.g. ``CLASSIFIER_ADMINS="a@example.com"``).
    """
    path = Path(folder) / "secrets.toml"
    lines = [f"{key} = {_toml_str(value)}" for key, value in root.items()]
    lines += [
        "[auth]",
        # Must be this server's /oauth2callback: the provider sends the browser back there.
        f'redirect_uri = "http://{host}:{port}/oauth2callback"',
        # Signs Streamlit's identity cookie; a fresh random one per server, so no cookie outlives it.
        f'cookie_secret = "{secrets.token_hex(32)}"',
        # The mock accepts any client id and secret; Streamlit insists they are set.
        'client_id = "streamlit-tests"',
        'client_secret = "not-a-secret"',
        f'server_metadata_url = "{issuer}/.well-known/openid-configuration"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return ["--secrets.files", str(path)]


def sign_in(page, email: str, timeout: float = 60_000) -> None:
    """On a page of the app showing a "Sign in" button that calls ``st.login()``: sign in as ``email``.

    Returns once the browser is back on the app with Streamlit's identity cookie; raises ``AssertionError`` if the
    provider or the callback failed (Streamlit then lands on the app signed out, with only a line in its log).
    """
    app = _origin(page.url)
    page.get_by_role("button", name="Sign in", exact=True).click(timeout=timeout)
    sub = page.get_by_placeholder("sub")  # the mock's login form: one text field and "Authorize"
    sub.fill(email, timeout=timeout)
    page.get_by_role("button", name="Authorize", exact=True).click(timeout=timeout)
    # The provider redirects to /oauth2callback, which sets the cookie and redirects to the app's home page.
    page.wait_for_url(lambda url: _origin(url) == app and "/oauth2callback" not in url, timeout=timeout)
    if not any(c["name"] == USER_COOKIE for c in page.context.cookies(app)):
        raise AssertionError(f"signing in as {email} failed: no {USER_COOKIE} cookie (see the Streamlit log)")


def sign_out(page, timeout: float = 60_000) -> None:
    """On a page of the app showing a "Sign out" button that calls ``st.logout()``: sign out.

    ``st.logout()`` clears the identity cookie, then sends the browser to the provider's end-session page, where the
    mock asks for a click before it returns the browser to the app's home page.
    """
    app = _origin(page.url)
    page.get_by_role("button", name="Sign out", exact=True).click(timeout=timeout)
    page.get_by_role("button", name="End session", exact=True).click(timeout=timeout)
    page.wait_for_url(lambda url: _origin(url) == app and "/oauth2callback" not in url, timeout=timeout)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
