"""The Runs page's model card section (ui.card_views.card_section) in a one-line script, through AppTest."""

from __future__ import annotations

from pagetest import SCRIPT_TIMEOUT, assert_clean, button, copy_run, texts
from streamlit.testing.v1 import AppTest

from core.publish.card import facts, render
from core.workspace import runs
from ui.card_views import PURPOSE


def card_script(run_path: str) -> None:
    from core.workspace.runs import read_run
    from ui.card_views import card_section

    card_section(read_run(run_path))


def open_card(run) -> AppTest:
    at = AppTest.from_function(card_script, args=(str(run),), default_timeout=SCRIPT_TIMEOUT)
    at.run()
    assert_clean(at)
    return at


def test_the_owner_writes_what_the_model_is_for_and_the_card_shows_it(trained_run):
    run = copy_run(trained_run)
    at = open_card(run)
    assert at.expander[0].label == "Model card"
    assert [d.label for d in at.get("download_button")] == [
        "Download card (Markdown)",
        "Download printable card (HTML)",
    ]
    assert any(facts.PLACEHOLDER in text for text in texts(at.markdown))

    at.text_area(key=PURPOSE + run.name).input("Sorts red from blue for the paint shop.")
    button(at, "Save").click().run()
    assert_clean(at)
    assert facts.purpose(run) == "Sorts red from blue for the paint shop."
    assert any("Sorts red from blue for the paint shop." in text for text in texts(at.markdown))
    assert texts(at.success) == ["Saved: the card below says so, for everyone."]


def test_someone_else_sees_the_purpose_but_may_not_change_it(trained_run):
    run = copy_run(trained_run)
    facts.set_purpose(run, "Ann's words.")
    runs.write_json(run / runs.MARKER, {**runs.read_json(run / runs.MARKER), "owner": "ann@example.com"})
    at = open_card(run)
    area = at.text_area(key=PURPOSE + run.name)
    assert area.value == "Ann's words." and area.disabled
    assert button(at, "Save").disabled
    assert "Only ann@example.com or an admin may change what this model is for." in texts(at.caption)


def test_the_preview_shows_the_confusion_matrix_as_an_image(trained_run):
    from core.evaluate.evaluation import FILE, compute_metrics

    run = copy_run(trained_run)
    classes = runs.read_json(run / "classes.json")
    probs = [[0.8 if j == i else 0.2 / (len(classes) - 1) for j in range(len(classes))] for i in range(len(classes))]
    runs.write_json(run / FILE, compute_metrics(list(range(len(classes))), probs, classes).to_dict())
    at = open_card(run)
    assert [img.caption for img in at.get("image")[0].proto.imgs] == ["Confusion matrix"]
    shown = "\n".join(texts(at.markdown))
    assert "## Confusion matrix" in shown and "## Trust in the probabilities" in shown  # before and after it
    assert render.image_markdown(render.IMAGE_FILE) not in shown  # no file reference on the page
