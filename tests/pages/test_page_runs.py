"""The Runs page through AppTest: the table, history, download, delete."""

from __future__ import annotations

from pagetest import assert_clean, button, copy_run, open_app, texts


def test_runs_without_runs_says_so():
    at = open_app("pages/runs.py")
    assert "No saved runs yet" in at.info[0].value


def test_runs_page_lists_and_deletes_a_run(trained_run):
    run = copy_run(trained_run)
    at = open_app("pages/runs.py")
    table = at.dataframe[0].value
    assert list(table["id"]) == [run.name]
    assert table["classes"][0] == 3
    assert at.selectbox[0].value.id == run.name
    assert '"image_size": 32' in at.json[0].value  # the settings
    downloads = [d.label for d in at.get("download_button")]
    assert downloads == ["Download run (.zip)", "Download card (Markdown)", "Download printable card (HTML)"]
    links = {link.proto.label: link.proto.query_string for link in at.get("page_link")}
    assert links == {"Evaluate this run": f"run={run.name}", "Classify with this run": f"run={run.name}"}

    button(at, "Yes, delete it").click().run()
    assert_clean(at)
    assert not run.exists()
    assert "No saved runs yet" in at.info[0].value


def test_delete_closes_its_popover_confirms_and_does_not_aim_at_the_next_run(trained_run):
    older = copy_run(trained_run, "20190101-000000-older-0001", finished="2019-01-01T00:00:00")
    newer = copy_run(trained_run)
    at = open_app("pages/runs.py")
    assert at.selectbox[0].value.id == newer.name
    delete = button(at, "Yes, delete it")
    assert delete.proto.type != "primary"  # a destructive action is not drawn in the app's green
    delete.click().run()
    assert_clean(at)
    assert not newer.exists() and older.exists()
    assert at.session_state["delete_popover"] is False  # drawn closed: one more click deletes nothing
    assert f"Deleted run {newer.name}." in texts(at.success)
    assert at.selectbox[0].value.id == older.name
    at.run()
    assert_clean(at)
    assert older.exists()
    assert not at.success  # the confirmation shows once


def test_runs_table_shows_the_key_columns_first_with_readable_headers_and_dates(trained_run):
    copy_run(trained_run, finished="2024-05-06T07:08:09")
    at = open_app("pages/runs.py")
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["id", "val_accuracy", "status"]
    assert str(table["finished"].dtype).startswith("datetime64")
    config = at.dataframe[0].proto.columns
    assert '"label": "Val accuracy"' in config and '"label": "Image size"' in config
    assert "image_size" not in config.replace('"image_size":', "")  # raw field names only as keys


def test_runs_table_shows_a_page_of_runs_at_a_time_newest_first(trained_run, monkeypatch):
    monkeypatch.setattr("ui.paging.PAGE_ROWS", 2)
    newest = copy_run(trained_run)
    older = copy_run(trained_run, "20190101-000000-older-0001", finished="2019-01-01T00:00:00")
    oldest = copy_run(trained_run, "20180101-000000-oldest-0001", finished="2018-01-01T00:00:00")
    at = open_app("pages/runs.py")
    table = at.dataframe[0].value
    assert list(table["id"]) == [newest.name, older.name]
    assert list(table.columns[:3]) == ["id", "val_accuracy", "status"]
    assert "Runs 1–2 of 3 (page 1 of 2)" in texts(at.caption)
    at.button(key="page_next_runs_page").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["id"]) == [oldest.name] and table["classes"][2] == 3  # its place in the whole list
    assert str(table["finished"].dtype).startswith("datetime64")
    assert "Runs 3–3 of 3 (page 2 of 2)" in texts(at.caption)


def test_compare_shows_the_key_metrics_first(trained_run):
    first = copy_run(trained_run)
    second = copy_run(trained_run, "20190101-000000-older-0001", finished="2019-01-01T00:00:00")
    at = open_app("pages/runs.py", query={"compare": [first.name, second.name]})
    key_metrics = next(d.value for d in at.dataframe if "best_val_accuracy" in d.value.columns)
    assert list(key_metrics.columns[:2]) == ["run", "val_accuracy"]
    assert len(key_metrics.columns) <= 8
    assert [e.label for e in at.expander if e.label == "Every metric"]


def test_train_again_opens_the_train_form_with_the_run_s_settings_on_its_saved_dataset(trained_run, tmp_path):
    from pagetest import load

    from core.workspace.runs import MARKER, read_json, write_json

    ds = load(tmp_path)
    run = copy_run(trained_run)
    write_json(run / MARKER, {**read_json(run / MARKER), "dataset_id": ds.id})
    at = open_app("pages/runs.py")
    link = next(link.proto for link in at.get("page_link") if link.proto.label == "Train again with these settings")
    assert link.query_string == f"dataset={ds.id}&settings_from={run.name}"

    at = open_app("pages/train.py", query={"dataset": ds.id, "settings_from": run.name})
    assert_clean(at)
    assert at.radio(key="cfg_weights").value == "none"
    assert at.slider(key="cfg_image_size").value == 32 and at.number_input(key="cfg_epochs").value == 1
    assert at.number_input(key="cfg_batch_size").value == 16
    assert "settings_from" not in at.query_params and at.query_params["dataset"] == ds.id


def test_a_run_whose_dataset_is_gone_says_how_to_train_again(trained_run):
    copy_run(trained_run)  # trained on a dataset this server never saved
    at = open_app("pages/runs.py")
    assert "Its dataset is no longer saved on this server" in " ".join(texts(at.caption))
    assert "Train again with these settings" not in [link.proto.label for link in at.get("page_link")]
