"""The router: the six pages in its menu, the Dataset page first, no TensorFlow where no model must answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pagetest import PAGES, ROOT, assert_clean, open_app, texts


def test_router_opens_dataset_first_and_registers_the_five_pages():
    at = open_app()
    assert texts(at.title) == ["Dataset"]
    for path, title in PAGES.items():
        at.switch_page(path).run()
        assert_clean(at)
        assert texts(at.title) == [title], path
    # The pages folder holds page scripts only: what they share lives in ui/. The demo is not in the menu: only a
    # Share link opens it (test_page_demo.py).
    assert sorted(p.name for p in (ROOT / "pages").glob("*.py")) == sorted([*(Path(p).name for p in PAGES), "demo.py"])


NO_TENSORFLOW = """
import sys
from streamlit.testing.v1 import AppTest
import core.jobs.probes

core.jobs.probes.measure_in_background = lambda *args, **kwargs: None  # the probe would load TensorFlow elsewhere

at = AppTest.from_file({app!r}, default_timeout=120)
at.run()
assert not at.exception, [e.value for e in at.exception]
at.button(key="use_sample").click().run()
assert not at.exception, [e.value for e in at.exception]
assert at.session_state["dataset_opened"].classes  # the session holds the saved dataset's id, and it opened
at.switch_page("pages/train.py").run()
assert not at.exception, [e.value for e in at.exception]
assert any(b.label == "Start training" for b in at.button)
assert any(m.label == "Trainable parameters" for m in at.metric)
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def test_dataset_and_train_pages_render_without_tensorflow(isolated_dirs):
    """A fresh process renders the Dataset page, loads the sample and renders the Train form: no TensorFlow."""
    code = NO_TENSORFLOW.format(app=str(ROOT / "app.py"))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "not-a-secret-but-long-enough-for-a-test",
    "client_id": "classifier",
    "client_secret": "secret",
    "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
}


def with_sign_in(query: dict | None = None, user: dict | None = None):
    from pagetest import APP, SCRIPT_TIMEOUT
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=SCRIPT_TIMEOUT)
    at.secrets["auth"] = AUTH
    if user:
        at.user = {"is_logged_in": True, **user}
    at.query_params.update(query or {})
    at.run()
    return at


def test_with_sign_in_on_a_visitor_who_is_not_signed_in_sees_only_the_way_in(trained_run):
    from pagetest import copy_run

    from core.workspace import share

    run = copy_run(trained_run)
    token = share.share(run)
    for query in ({}, {"run": run.name}, {"dataset": "0123456789abcdef"}, {"job": run.name}):
        at = with_sign_in(query)
        assert_clean(at)
        assert texts(at.title) == ["Image classifier maker"], query
        assert [b.label for b in at.button] == ["Sign in"]
        assert not at.sidebar.children and not at.dataframe and not at.get("page_link")
        assert run.name not in " ".join(texts(at.markdown) + texts(at.caption))
    for key in ("", "wrong", token[:-1]):  # a demo address without its token: a sentence, nothing else
        at = with_sign_in({"demo": run.name, "key": key})
        assert len(at.error) == 1 and not at.title and not at.sidebar.children and not at.button
    # Its own token opens the one demo, and nothing else.
    demo = with_sign_in({"demo": run.name, "key": token})
    assert_clean(demo)
    assert texts(demo.title) == ["colours classifier"] and not demo.sidebar.children and not demo.button
    # Signed in: the workspace.
    inside = with_sign_in(user={"sub": "ann", "iss": "https://id.example.com", "email": "ann@example.com"})
    assert_clean(inside)
    assert texts(inside.title) == ["Dataset"]


def test_a_signed_in_answer_that_cannot_be_trusted_says_why_and_offers_sign_out():
    at = with_sign_in(user={"sub": "ann", "iss": "https://id.example.com", "email": "ann@example.com",
                            "email_verified": False})  # fmt: skip
    assert not at.exception
    assert any("not verified" in e for e in texts(at.error))
    assert [b.label for b in at.button] == ["Sign out"]
    assert texts(at.title) != ["Dataset"]


def test_text_from_the_address_is_shown_literally_never_as_markdown(trained_run):
    from pagetest import copy_run

    copy_run(trained_run)
    hostile = "[click here](https://evil.example.com) ![x](https://evil.example.com/x.png) :red[**alarm**] <b>"
    at = open_app("pages/runs.py", query={"run": hostile})
    assert_clean(at)
    [error] = texts(at.error)
    assert "\\[click here\\]" in error and "!\\[x\\]" in error and "\\:red\\[\\*\\*alarm\\*\\*\\]" in error
    assert "](" not in error.replace("\\](", "") and "<b>" not in error
