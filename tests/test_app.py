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
import core.speed

core.speed.measure_in_background = lambda *args, **kwargs: None  # the probe would load TensorFlow elsewhere

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
