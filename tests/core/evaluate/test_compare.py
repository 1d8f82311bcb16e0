"""Comparing runs: core.evaluate.compare on run folders written here and on real trained runs, and the Runs page's view.

The pure tests write a run's small files directly (a model file is only checked for existence); the others train
two real tiny runs once per module that differ only in their optimizer and learning rate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import ROOT, class_entries, make_zip, tiny_config
from streamlit.testing.v1 import AppTest

from core.config import TrainConfig
from core.evaluate.compare import compare, run_labels
from core.util.errors import UserError
from core.workspace import runs

HISTORY = "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,0.4,1.3\n1,0.7,0.9,0.6,1.1\n2,0.8,0.7,0.55,1.0\n"


def fake_run(folder: Path, config: dict | None = None, metrics: dict | None = None, history: str | None = HISTORY,
             **info) -> Path:  # fmt: skip
    """A run folder as training leaves it, minus a real model."""
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"PK not loaded by compare")
    runs.write_json(folder / "classes.json", ["cat", "dog"])
    runs.write_json(folder / "config.json", TrainConfig().to_dict() if config is None else config)
    runs.write_json(folder / "metrics.json", metrics or {"val_accuracy": 0.55, "val_loss": 1.0, "seconds": 3.5})
    if history is not None:
        (folder / "history.csv").write_text(history)
    marker = {"format": runs.RUN_FORMAT, "version": runs.RUN_VERSION, "status": "completed",
              "started": "2024-01-01T10:00:00", "finished": "2024-01-01T10:05:00", "dataset": "pets.zip"}  # fmt: skip
    runs.write_json(folder / runs.MARKER, {**marker, **info})
    return folder


def config(**changes) -> dict:
    return {**TrainConfig().to_dict(), **changes}


# ---------------------------------------------------------------------------------------------- settings


def test_differing_lists_exactly_the_settings_that_differ(tmp_path):
    a = fake_run(tmp_path / "a", config())
    b = fake_run(tmp_path / "b", config(optimizer="adam", learning_rate=1e-4))
    c = fake_run(tmp_path / "c", config(optimizer="adam"))
    cmp = compare([a, b, c])
    assert cmp.differing == ["optimizer", "learning_rate"]
    assert cmp.settings["optimizer"] == ["sgd", "adam", "adam"]
    assert cmp.settings["learning_rate"] == [0.01, 1e-4, 0.01]
    # Every TrainConfig field has a row, after the dataset's, in the dataclass's order.
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(cmp.settings) == ["dataset", "classes", *fields]
    assert cmp.settings["dataset"] == ["pets.zip"] * 3 and cmp.settings["classes"] == ["cat, dog"] * 3
    assert compare([a, fake_run(tmp_path / "a2", config())]).differing == []


def test_dataset_and_classes_count_as_settings(tmp_path):
    a = fake_run(tmp_path / "a", config())
    b = fake_run(tmp_path / "b", config(), dataset="birds.zip")
    runs.write_json(b / "classes.json", ["crow", "dove", "owl"])
    cmp = compare([a, b])
    assert cmp.differing == ["dataset", "classes"]
    assert cmp.settings["classes"] == ["cat, dog", "crow, dove, owl"]


def test_older_runs_get_defaults_and_unknown_settings_are_listed(tmp_path):
    older = config()
    del older["precision"]  # saved before the option existed: it trained with the default
    a = fake_run(tmp_path / "a", older)
    b = fake_run(tmp_path / "b", config(precision=TrainConfig().precision))
    assert compare([a, b]).differing == []
    c = fake_run(tmp_path / "c", config(precision="float32", from_the_future=3))  # a newer app's option
    cmp = compare([a, b, c])
    assert cmp.settings["precision"] == [TrainConfig().precision] * 2 + ["float32"]
    assert cmp.settings["from_the_future"] == [None, None, 3]
    assert list(cmp.settings)[-1] == "from_the_future"
    assert cmp.differing == ["precision", "from_the_future"]


# ---------------------------------------------------------------------------------------------- limits


def test_compare_takes_two_to_five_runs(tmp_path):
    folders = [fake_run(tmp_path / f"r{i}", config(seed=i)) for i in range(6)]
    for few_or_many in (folders[:1], folders, [], [folders[0], folders[0]]):  # the same run twice is one run
        with pytest.raises(UserError, match=r"between 2 and 5 different runs to compare; got \d"):
            compare(few_or_many)
    assert compare(folders[:5]).labels == ["r0", "r1", "r2", "r3", "r4"]
    assert compare(folders[:2]).differing == ["seed"]


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path):
    run = fake_run(tmp_path / "run")
    plain = tmp_path / "holiday photos"
    plain.mkdir()
    (plain / "model.keras").write_bytes(b"PK")
    with pytest.raises(UserError, match="holiday photos is not a run saved by this app"):
        compare([run, plain])
    with pytest.raises(UserError, match="is not a folder"):
        compare([run, tmp_path / "missing"])


def test_labels_are_folder_names_made_distinct(tmp_path):
    a = fake_run(tmp_path / "first" / "run")
    b = fake_run(tmp_path / "second" / "run")
    assert compare([a, b]).labels == ["first/run", "second/run"]
    assert run_labels([Path("x/p/run"), Path("y/p/run"), Path("z/q/run")]) == ["p/run (1)", "p/run (2)", "q/run"]
    assert run_labels([Path("x/a"), Path("x/b")]) == ["a", "b"]


# ---------------------------------------------------------------------------------------------- metrics, history


def test_metrics_has_one_row_per_run_with_evaluation_when_present(tmp_path):
    from core.evaluate.evaluation import FILE, compute_metrics

    a = fake_run(tmp_path / "a", metrics={"val_accuracy": 0.55, "val_loss": 1.0, "epochs_completed": 3})
    b = fake_run(tmp_path / "b", metrics={"val_accuracy": 0.8, "trainable": 1234, "path": "end to end"},
                 status="stopped")  # fmt: skip
    evaluation = compute_metrics([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], ["cat", "dog"])
    runs.write_json(b / FILE, evaluation.to_dict())
    cmp = compare([a, b])
    assert [m["run"] for m in cmp.metrics] == ["a", "b"]
    first, second = cmp.metrics
    assert (first["val_accuracy"], first["val_loss"], first["epochs_completed"]) == (0.55, 1.0, 3)
    assert first["eval_accuracy"] is None and first["trainable"] is None  # not recorded: empty, not invented
    assert (second["status"], second["trainable"], second["path"]) == ("stopped", 1234, "end to end")
    assert second["eval_accuracy"] == pytest.approx(2 / 3) and second["eval_images"] == 3
    assert first["best_val_accuracy"] == 0.6 and first["best_epoch"] == 2  # from history.csv, epochs from 1


def test_history_is_long_form_rows_of_every_numeric_column(tmp_path):
    a = fake_run(tmp_path / "a")
    # A two-phase run of a newer app: a phase column, epochs counted from 0 again, a learning-rate column, a nan.
    b = fake_run(tmp_path / "b", history="epoch,phase,loss,val_loss,lr\n0,head,1.5,1.4,0.01\n0,fine,nan,1.2,0.001\n")
    cmp = compare([a, b])
    rows = {(r["run"], r["epoch"], r["metric"]): r for r in cmp.history}
    assert {run for run, _, _ in rows} == {"a", "b"}
    assert sorted(e for run, e, m in rows if run == "a" and m == "val_accuracy") == [1, 2, 3]
    assert rows["a", 3, "val_loss"]["value"] == 1.0 and "phase" not in rows["a", 3, "val_loss"]
    assert rows["b", 2, "val_loss"] == {"run": "b", "epoch": 2, "phase": "fine", "metric": "val_loss", "value": 1.2}
    assert rows["b", 1, "lr"]["value"] == 0.01
    assert ("b", 2, "loss") not in rows  # nan: nothing a chart can draw
    assert not any(m in ("epoch", "phase") for _, _, m in rows)
    assert compare([a, fake_run(tmp_path / "c", history=None)]).history == [r for r in cmp.history if r["run"] == "a"]


def test_compare_reads_files_only_and_never_loads_tensorflow(tmp_path):

    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", config(seed=1))
    code = (
        "import sys; from core.evaluate.compare import compare; "
        f"print(compare([{str(a)!r}, {str(b)!r}]).differing, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['seed']", "False", "False"]


# ---------------------------------------------------------------------------------------------- real runs

ADAM = "20200101-000000-colours-adam"
SGD = "20200102-000000-colours-sgd0"


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two real runs on the same images that differ only in their optimizer and learning rate."""
    base = tmp_path_factory.mktemp("pair")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(base / "keras"))
        from core.data.dataset import load_dataset
        from core.train.training import train

        ds = load_dataset(make_zip(base / "colours.zip", class_entries(per_class=6)), base / "work")
        first = train(ds, tiny_config(), base / "runs" / ADAM)
        second = train(ds, tiny_config(optimizer="sgd", learning_rate=0.01), base / "runs" / SGD)
    return first.run_dir, second.run_dir


def test_real_runs_differ_in_exactly_their_optimizer_and_learning_rate(trained_pair):
    cmp = compare(list(trained_pair))
    assert cmp.labels == [ADAM, SGD]
    assert cmp.differing == ["optimizer", "learning_rate"]
    assert cmp.settings["optimizer"] == ["adam", "sgd"] and cmp.settings["learning_rate"] == [0.05, 0.01]
    assert len(cmp.metrics) == 2
    for row, path in zip(cmp.metrics, trained_pair, strict=True):
        saved = runs.read_json(path / "metrics.json")
        assert row["val_accuracy"] == saved["val_accuracy"] and row["epochs_completed"] == 2
        assert row["status"] == "completed" and row["trainable"] > 0
    for label in cmp.labels:
        for metric in ("val_accuracy", "val_loss"):
            curve = [r for r in cmp.history if r["run"] == label and r["metric"] == metric]
            assert [r["epoch"] for r in curve] == [1, 2] and all(math.isfinite(r["value"]) for r in curve)


# ---------------------------------------------------------------------------------------------- Runs page

APP = ROOT / "app.py"


def open_runs_page(query: dict | None = None) -> AppTest:

    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.query_params.update(query or {})
    at.switch_page("pages/runs.py").run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def copy_pair(trained_pair) -> list[str]:
    for path in trained_pair:
        shutil.copytree(path, runs.runs_dir() / path.name)
    return [path.name for path in trained_pair]


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def charts(at: AppTest) -> list[tuple[str, pd.DataFrame]]:
    """Every chart on the page: its title and the data it draws."""
    found = []
    for chart in at.get("vega_lite_chart"):
        data = chart.proto.datasets[0].data.data if chart.proto.datasets else None
        table = pa.ipc.open_stream(data).read_all().to_pandas() if data else pd.DataFrame()
        found.append((json.loads(chart.proto.spec).get("title"), table))
    return found


def assert_comparison_shown(at: AppTest, ids: list[str]) -> None:
    differ = r"2 of \d+ settings differ: optimizer, learning_rate\."
    assert any(re.fullmatch(differ, c) for c in captions(at)), captions(at)
    settings = at.dataframe[1].value
    assert list(settings.columns) == ids
    assert settings.loc["optimizer"].tolist() == ["adam", "sgd"]
    assert settings.loc["learning_rate"].tolist() == ["0.05", "0.01"]
    assert settings.loc["image_size"].tolist() == ["32", "32"]
    metrics = at.dataframe[2].value
    assert metrics["run"].tolist() == ids
    assert metrics["val_accuracy"].between(0, 1).all() and (metrics["epochs_completed"] == 2).all()


def test_runs_page_compares_two_picked_runs(trained_pair):

    ids = copy_pair(trained_pair)
    at = open_runs_page()
    assert at.multiselect(key="compare").value == []
    alone = len(charts(at))  # the selected run's own curves
    assert len(at.dataframe) == 1  # the list of runs only

    at.multiselect(key="compare").set_value(ids).run()
    assert_clean(at)
    assert_comparison_shown(at, ids)
    overlaid = charts(at)[alone:]
    assert [title for title, _ in overlaid] == ["Validation accuracy", "Validation loss"]
    for (_, data), metric in zip(overlaid, ("val_accuracy", "val_loss"), strict=True):
        assert set(data["metric"]) == {metric}
        assert sorted(data["run"]) == sorted(ids * 2)  # both runs, two epochs each

    at.toggle(key="compare_only_different").set_value(True).run()
    assert_clean(at)
    assert at.dataframe[1].value.index.tolist() == ["optimizer", "learning_rate"]


def test_runs_page_with_one_picked_run_shows_the_hint(trained_pair):

    ids = copy_pair(trained_pair)
    at = open_runs_page()
    at.multiselect(key="compare").set_value(ids[:1]).run()
    assert_clean(at)
    assert any(c.startswith("Pick 2 to 5 runs") for c in captions(at))
    assert len(at.dataframe) == 1  # no comparison tables yet
    assert not any("settings differ" in c for c in captions(at))


def test_runs_page_opens_the_comparison_named_in_the_address(trained_pair):

    ids = copy_pair(trained_pair)
    at = open_runs_page(query={"compare": [*ids, "no-such-run"]})
    assert at.multiselect(key="compare").value == ids
    assert_comparison_shown(at, ids)


def test_runs_page_keeps_comparing_after_a_picked_run_is_deleted(trained_pair):
    ids = copy_pair(trained_pair)
    extra = runs.runs_dir() / "20190101-000000-colours-old0"
    shutil.copytree(trained_pair[0], extra)
    runs.write_json(extra / runs.MARKER, {**runs.read_json(extra / runs.MARKER), "finished": "2099-01-01T00:00:00"})
    at = open_runs_page()
    assert at.selectbox[0].value.id == extra.name  # newest first: the one the delete button deletes
    at.multiselect(key="compare").set_value([extra.name, *ids]).run()
    assert_clean(at)
    assert len(at.dataframe) == 4  # runs, settings, key metrics, every metric
    next(b for b in at.button if b.label == "Yes, delete it").click().run()
    assert_clean(at)
    assert not extra.exists()
    assert at.multiselect(key="compare").value == ids
    assert_comparison_shown(at, ids)


def test_runs_page_with_a_single_run_says_a_second_is_needed(trained_pair):
    shutil.copytree(trained_pair[0], runs.runs_dir() / ADAM)
    at = open_runs_page()
    assert "Train a second model to compare runs side by side." in captions(at)
    assert not [m for m in at.multiselect if m.label == "Runs to compare"]


def test_runs_page_says_when_every_setting_is_the_same(trained_pair):
    for name in (ADAM, "20200103-000000-colours-same"):
        shutil.copytree(trained_pair[0], runs.runs_dir() / name)
    at = open_runs_page(query={"compare": [ADAM, "20200103-000000-colours-same"]})
    assert "Every setting is the same in these runs." in captions(at)
    assert len(at.dataframe) == 4  # runs, settings, key metrics, every metric
    at.toggle(key="compare_only_different").set_value(True).run()
    assert_clean(at)
    assert len(at.dataframe) == 3  # no empty settings table
    assert at.dataframe[1].value["run"].tolist() == [ADAM, "20200103-000000-colours-same"]
