"""The Evaluate page's suspected label errors, through AppTest: the search as a job, the gallery, and "Exclude from
training" / "Keep" saved with the dataset (seen again after a reload).

The run is a stand-in folder (as a finished job leaves it) over a real saved dataset of real images; its
evaluation.json and label_issues.json are written here, and the search job runs a stand-in of
``core.evaluate.label_issues.find_label_issues`` (the real one is tested in test_label_issues.py).
"""

from __future__ import annotations

from conftest import tiny_config
from pagetest import assert_clean, button, load, open_app, texts

RUN_ID = "20240101-000000-colours-abcd"


def make_run(ds, dataset_id: str | None = None) -> str:
    """A run folder of ``ds`` (every image scored right) as the pages read it; returns its id."""
    from core.evaluate.evaluation import compute_metrics
    from core.workspace import runs

    path = runs.runs_dir() / RUN_ID
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"")
    files = [it.path for it in ds.items]
    labels = [it.label for it in ds.items]
    runs.write_json(path / "classes.json", ds.classes)
    runs.write_json(path / "config.json", tiny_config().to_dict())
    runs.write_json(path / "metrics.json", {"val_accuracy": 1.0, "epochs_completed": 1})
    runs.write_json(path / "split.json", {"root": str(ds.root), "train": files[3:], "val": files[:3], "test": []})
    probs = [[1.0 if c == label else 0.0 for c in range(len(ds.classes))] for label in labels]
    ev = compute_metrics(labels, probs, ds.classes, files, top_k=1)
    ev.source, ev.split, ev.data, ev.root, ev.created = "val", "val", "colours.zip", str(ds.root), "2024-05-01T12:00"
    runs.write_json(path / "evaluation.json", ev.to_dict())
    marker = {"format": runs.RUN_FORMAT, "version": runs.RUN_VERSION, "status": "completed",
              "finished": "2024-01-01T00:00:00", "dataset": "colours.zip", "val_accuracy": 1.0,
              "dataset_id": ds.id if dataset_id is None else dataset_id, "owner": ""}  # fmt: skip
    runs.write_json(path / runs.MARKER, marker)
    return RUN_ID


def write_issues(run_dir, ds) -> list[dict]:
    """A search's result: two suspects among the dataset's real files."""
    from core.evaluate.label_issues import FILE, LabelIssues
    from core.workspace import runs

    suspects = [
        {"file": "red/0.jpg", "given": "red", "suggested": "blue", "confidence": 0.91, "given_probability": 0.05},
        {"file": "green/1.jpg", "given": "green", "suggested": "red", "confidence": 0.72, "given_probability": 0.2},
    ]
    found = LabelIssues(run=run_dir.name, classes=ds.classes, images=len(ds.items), folds=5,
                        features="the output of 'gap', the last frozen layer (512 values per image)", fine_tuned=False,
                        out_of_fold_accuracy=0.93, suspects=suspects, dataset_id=ds.id, dataset=ds.title,
                        root=str(ds.root), created="2024-05-01T12:00:00")  # fmt: skip
    runs.write_json(run_dir / FILE, found.to_dict())
    return suspects


def markdowns(at) -> list[str]:
    return texts(at.markdown)


def test_the_gallery_saves_exclude_and_keep_with_the_dataset(tmp_path):
    from core.workspace.decisions import EXCLUDE, KEEP, decisions, excluded
    from core.workspace.runs import runs_dir

    ds = load(tmp_path)
    run_id = make_run(ds)
    write_issues(runs_dir() / run_id, ds)
    at = open_app("pages/evaluate.py", query={"run": run_id})
    assert "Suspected label errors" in texts(at.subheader)
    shown = markdowns(at)
    assert "given **red** · suggested **blue** 91%" in shown and "given **green** · suggested **red** 72%" in shown
    assert shown.count("Not decided") == 2
    assert any("2 suspects among 30 training and validation images" in c for c in texts(at.caption))

    at.button(key=f"label_issues_exclude_{run_id}_0").click().run()
    assert_clean(at)
    assert decisions(ds.id)["red/0.jpg"]["decision"] == EXCLUDE and excluded(ds.id) == ["red/0.jpg"]
    assert ":red[Excluded from training]" in markdowns(at)
    assert any("1 image of colours.zip excluded from its next training" in c for c in texts(at.caption))
    train = open_app("pages/train.py", query={"dataset": ds.id})  # the Train form says so before a run starts
    assert any(c.startswith("1 image of this dataset is excluded from training") for c in texts(train.caption))

    # A reload (a new session): the decision is the dataset's, so it is still there; Keep changes it back.
    again = open_app("pages/evaluate.py", query={"run": run_id})
    assert ":red[Excluded from training]" in markdowns(again)
    assert again.button(key=f"label_issues_exclude_{run_id}_0").disabled
    again.button(key=f"label_issues_keep_{run_id}_0").click().run()
    assert_clean(again)
    assert decisions(ds.id)["red/0.jpg"]["decision"] == KEEP and excluded(ds.id) == []
    assert ":green[Kept]" in markdowns(again)
    # Only the kept ones.
    again.segmented_control(key=f"label_issues_filter_{run_id}").set_value(KEEP).run()
    assert_clean(again)
    assert [m for m in markdowns(again) if m.startswith("given")] == ["given **red** · suggested **blue** 91%"]


def test_a_run_without_a_saved_dataset_says_exclusions_need_one(tmp_path):
    from core.workspace.runs import runs_dir

    ds = load(tmp_path)
    run_id = make_run(ds, dataset_id="")
    write_issues(runs_dir() / run_id, ds)
    at = open_app("pages/evaluate.py", query={"run": run_id})
    assert any("Exclusions are saved with the dataset" in i for i in texts(at.info))
    assert at.button(key=f"label_issues_exclude_{run_id}_0").disabled
    assert at.button(key=f"label_issues_keep_{run_id}_1").disabled


def test_the_search_runs_as_a_job_and_its_result_is_shown(tmp_path, monkeypatch):
    import core.evaluate.label_issues
    from core.jobs.kinds import LABEL_ISSUES
    from core.jobs.registry import registry

    ds = load(tmp_path)
    run_id = make_run(ds)
    calls = []

    def fake_search(run_dir, dataset=None, folds=5, progress=None, cache=None, user=""):
        calls.append((run_dir.name, dataset.id if dataset else None, folds))
        for i in range(1, 4):
            progress("folds", i, 3)
        write_issues(run_dir, ds)
        return core.evaluate.label_issues.load_label_issues(run_dir)

    monkeypatch.setattr(core.evaluate.label_issues, "find_label_issues", fake_search)
    at = open_app("pages/evaluate.py", query={"run": run_id})
    assert not [m for m in markdowns(at) if m.startswith("given")]
    button(at, "Find suspected label errors").click().run()
    assert_clean(at)
    (job,) = [j for j in registry().jobs() if j.kind == LABEL_ISSUES]  # the stand-in may have finished already
    assert job.kind == LABEL_ISSUES and job.dataset_id == ds.id
    done = registry().wait(job.id, timeout=120)
    assert done.state == "completed", done.error
    assert calls == [(run_id, ds.id, 5)]
    at.run()
    assert_clean(at)
    assert "given **red** · suggested **blue** 91%" in markdowns(at)


def many_suspects(run_dir, ds, n: int = 14, root: str | None = None) -> list[dict]:
    """A search's result with ``n`` suspects (one per image of the dataset, most suspicious first)."""
    from core.evaluate.label_issues import FILE, LabelIssues
    from core.workspace import runs

    suspects = [
        {"file": it.path, "given": ds.classes[it.label], "suggested": ds.classes[(it.label + 1) % 3],
         "confidence": 0.99 - 0.01 * k, "given_probability": 0.01}
        for k, it in enumerate(ds.items[:n])
    ]  # fmt: skip
    found = LabelIssues(run=run_dir.name, classes=ds.classes, images=len(ds.items), folds=5, features="gap",
                        fine_tuned=False, out_of_fold_accuracy=0.5, suspects=suspects, dataset_id=ds.id,
                        dataset=ds.title, root=str(ds.root) if root is None else root,
                        created="2024-05-01T12:00:00")  # fmt: skip
    runs.write_json(run_dir / FILE, found.to_dict())
    return suspects


def words(s: dict) -> str:
    return f"given **{s['given']}** · suggested **{s['suggested']}** {s['confidence']:.0%}"


def test_the_gallery_shows_a_page_of_suspects_at_a_time_and_keeps_it_while_deciding(tmp_path):
    from core.workspace.decisions import EXCLUDE, decisions
    from core.workspace.runs import runs_dir

    ds = load(tmp_path)
    run_id = make_run(ds)
    suspects = many_suspects(runs_dir() / run_id, ds)
    at = open_app("pages/evaluate.py", query={"run": run_id})
    assert [m for m in markdowns(at) if m.startswith("given")] == [words(s) for s in suspects[:12]]
    assert len(at.image) == 12
    assert "Suspects 1–12 of 14 (page 1 of 2)" in texts(at.caption)
    pages = f"label_issues_shown_{run_id}_all"
    at.button(key=f"page_next_{pages}").click().run()
    assert_clean(at)
    assert [m for m in markdowns(at) if m.startswith("given")] == [words(s) for s in suspects[12:]]
    assert len(at.image) == 2
    assert "Suspects 13–14 of 14 (page 2 of 2)" in texts(at.caption)

    at.button(key=f"label_issues_exclude_{run_id}_13").click().run()  # the buttons name the suspect's place
    assert_clean(at)
    assert decisions(ds.id)[suspects[13]["file"]]["decision"] == EXCLUDE
    assert [m for m in markdowns(at) if m.startswith("given")] == [words(s) for s in suspects[12:]]  # still page 2

    at.segmented_control(key=f"label_issues_filter_{run_id}").set_value("open").run()
    assert_clean(at)
    assert [m for m in markdowns(at) if m.startswith("given")] == [words(s) for s in suspects[:12]]  # from page 1
    at.button(key=f"page_next_label_issues_shown_{run_id}_open").click().run()
    assert [m for m in markdowns(at) if m.startswith("given")] == [words(suspects[12])]
    assert "Suspects 13–13 of 13 (page 2 of 2)" in texts(at.caption)


def test_the_names_of_gone_suspects_are_listed_a_page_at_a_time(tmp_path, monkeypatch):
    from core.workspace.runs import runs_dir

    monkeypatch.setattr("ui.paging.PAGE_ROWS", 10)
    ds = load(tmp_path)
    run_id = make_run(ds)
    suspects = many_suspects(runs_dir() / run_id, ds, root=str(tmp_path / "gone"))
    at = open_app("pages/evaluate.py", query={"run": run_id})
    assert any(w.value.startswith("These images are no longer on disk") for w in at.warning)
    (names,) = [d.value for d in at.dataframe if "suggested" in d.value.columns]
    assert list(names["file"]) == [s["file"] for s in suspects[:10]]
    assert list(names.columns) == ["file", "given", "suggested", "confidence"]
    assert "Rows 1–10 of 14 (page 1 of 2)" in texts(at.caption)
    at.button(key=f"page_next_label_issues_names_{run_id}_all").click().run()
    assert_clean(at)
    (names,) = [d.value for d in at.dataframe if "suggested" in d.value.columns]
    assert list(names["file"]) == [s["file"] for s in suspects[10:]]
    assert "Rows 11–14 of 14 (page 2 of 2)" in texts(at.caption)
