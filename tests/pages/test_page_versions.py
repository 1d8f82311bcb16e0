"""Dataset versions on the pages through AppTest: the Dataset page's list, the Runs page's "Train again on the
newest version" and the compared runs' versions."""

from __future__ import annotations

from conftest import COLORS, jpeg_bytes
from pagetest import JOB_TIMEOUT, assert_clean, button, copy_run, load, open_app, texts

from core.jobs.registry import registry
from core.workspace import runs, versions
from core.workspace.runs import MARKER, read_json, write_json


def greens(n: int, seed: int = 0) -> list[tuple[bytes, str, str]]:
    return [(jpeg_bytes(COLORS["green"], seed=5000 + seed + i), f"new{i}.jpg", "green") for i in range(n)]


def versions_table(at):
    return next(d.value for d in at.dataframe if "new validation" in d.value.columns)


def run_on(trained_run, ds, version: int, name: str | None = None, owner: str = "", finished: str | None = None):
    """A copy of the module's run, as if trained on ``version`` of the saved dataset ``ds``."""
    run = copy_run(trained_run, name, finished)
    write_json(run / MARKER, {**read_json(run / MARKER), "dataset_id": ds.id, "owner": owner})
    write_json(run / "config.json", {**read_json(run / "config.json"), "dataset_version": version})
    return run


def test_the_dataset_page_lists_the_versions_with_their_new_validation_images(tmp_path):
    ds = load(tmp_path)
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    table = versions_table(at)
    assert list(table["version"]) == ["v1"] and list(table["new validation"]) == ["—"]
    assert table["message"][0] == "Saved from colours.zip" and table["by"][0] == "a guest"

    versions.commit(ds.id, "", "twelve more greens", add=greens(12))  # the review queue accepts some photos
    at.run()  # the same session: the page shows the newest version, not the one it opened before
    assert_clean(at)
    table = versions_table(at)
    assert list(table["version"]) == ["v2", "v1"] and list(table["images"]) == [42, 30]
    assert table["message"][0] == "twelve more greens"
    assert table["per class"][0] == "blue 10, green 22, red 10"
    n = versions.new_validation(ds.id, 1, 2, 0.1)
    assert table["new validation"][0] == f"{n} validation image{'' if n == 1 else 's'} new since v1"
    assert any(c.startswith("Showing v2 (the newest).") for c in texts(at.caption))
    assert at.metric[1].value == "42"  # the images of the newest version


def test_the_versions_are_listed_a_page_at_a_time_newest_first(tmp_path, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 2)
    ds = load(tmp_path)
    versions.commit(ds.id, "", "two greens", add=greens(2))
    versions.commit(ds.id, "", "two more greens", add=greens(2, seed=10))
    at = open_app("pages/dataset.py", query={"dataset": ds.id})
    table = versions_table(at)
    assert list(table["version"]) == ["v3", "v2"] and list(table["message"]) == ["two more greens", "two greens"]
    assert "Rows 1–2 of 3 (page 1 of 2)" in texts(at.caption)
    at.button(key=f"page_next_versions_page_{ds.id}").click().run()
    assert_clean(at)
    table = versions_table(at)
    assert list(table["version"]) == ["v1"] and list(table["new validation"]) == ["—"]
    assert list(table["images"]) == [30]
    assert "Rows 3–3 of 3 (page 2 of 2)" in texts(at.caption)


def test_a_run_on_an_older_version_trains_again_on_the_newest_with_one_button(trained_run, tmp_path, fast_training):
    ds = load(tmp_path)
    run = run_on(trained_run, ds, 1)
    at = open_app("pages/runs.py")
    assert not [b for b in at.button if b.label.startswith("Train again on the newest")]  # v1 is the newest

    versions.commit(ds.id, "", "two greens", add=greens(2))
    at = open_app("pages/runs.py")
    assert "Trained on v1 of its dataset; v2 is the newest (v1 → v2: 2 added (green 2))." in texts(at.caption)
    button(at, "Train again on the newest version (v2)").click().run()
    assert_clean(at)
    job_id = at.query_params["job"][0] if isinstance(at.query_params["job"], list) else at.query_params["job"]
    done = registry().wait(job_id, timeout=JOB_TIMEOUT)
    assert done.state == "completed", done.error
    again = runs.find_run(job_id)
    assert again.dataset_version == 2 and again.dataset_id == ds.id
    assert again.config.image_size == runs.read_run(run).config.image_size


def test_someone_elses_run_says_who_may_train_it_again(trained_run, tmp_path):
    ds = load(tmp_path)
    run_on(trained_run, ds, 1, owner="b@x.org")
    versions.commit(ds.id, "", "two greens", add=greens(2))
    at = open_app("pages/runs.py")
    assert not [b for b in at.button if b.label.startswith("Train again on the newest")]
    assert "Trained by b@x.org: only they or an admin may train it again on the newest version (v2)." in texts(
        at.caption
    )


def test_compare_shows_both_runs_dataset_versions_and_their_diff(trained_run, tmp_path):
    ds = load(tmp_path)
    versions.commit(ds.id, "", "twelve greens", add=greens(12))
    first = run_on(trained_run, ds, 1, "20190101-000000-first-0001", finished="2019-01-01T00:00:00")
    second = run_on(trained_run, ds, 2)
    at = open_app("pages/runs.py", query={"compare": [first.name, second.name]})
    table = next(d.value for d in at.dataframe if list(d.value.columns) == ["run", "dataset", "version"])
    assert list(table["version"]) == ["v1", "v2"]
    n = versions.new_validation(ds.id, 1, 2, runs.read_run(second).config.validation_split)
    line = next(c for c in texts(at.caption) if c.startswith(f"{first.name} (v1) and {second.name} (v2)"))
    assert "v1 → v2: 12 added (green 12)" in line
    if n:
        assert f"v2 has {n} validation image{'' if n == 1 else 's'} new since v1" in line
    else:
        assert "they are validated on the same images" in line
