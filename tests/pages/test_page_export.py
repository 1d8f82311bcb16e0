"""The Runs page's export section through AppTest: start an export job, read its parity and deployment reports,
flag a miss and a loss against the app."""

from __future__ import annotations

import json

from pagetest import assert_clean, button, copy_run, open_app, texts


def deployment_report(run_name: str, loses: bool = False) -> dict:
    """A deployment report made by core.publish.report from hand-made answers (6 validation images, 2 per class);
    with ``loses``, litert-int8 gets one green image wrong: green falls from 100 % to 50 %, agreement to 83 %."""
    import numpy as np

    from core.publish import report

    classes, labels = ["red", "green", "blue"], np.array([0, 0, 1, 1, 2, 2])
    app = np.eye(3)[labels] * 0.8 + 0.2 / 3
    int8 = app.copy()
    if loses:
        int8[2] = app[0]
    latency = [{"threads": 1, "p50_ms": 3.5, "runs": 20}, {"threads": 2, "p50_ms": 2.25, "runs": 20}]
    rows = [
        report.format_row("onnx", "model.onnx", 400, "square uint8", app, app, labels, classes, latency),
        report.format_row("litert-int8", "model_int8.tflite", 100, "square uint8", int8, app, labels, classes, latency),
    ]
    scores = report.scores(app, labels, classes)
    return report.deployment(run_name, classes, rows, scores, "6 validation images", "27 training images", 2)


def write_bundle(run_dir, passed: bool = True, loses: bool = False):
    """A bundle as core.publish.export leaves it (its report written here: the real export is tested in test_export)."""
    from core.publish.bundles import exports_dir

    bundle = exports_dir(run_dir) / run_dir.name
    bundle.mkdir(parents=True)
    miss = [] if passed else [{"image": "val/red/3.png", "app": "red 0.6000", "export": "blue 0.5100",
                               "diff": 0.11, "why": "float rounding in the runtime"}]  # fmt: skip
    checks = [
        {"format": "saved_model", "input": "encoded bytes", "images": 14, "top1_agreement": 1.0,
         "max_abs_diff": 3e-7, "target": 1e-3, "disagreements": [], "passed": True},
        {"format": "onnx", "input": "square uint8", "images": 14, "top1_agreement": 1.0 if passed else 13 / 14,
         "max_abs_diff": 2e-7 if passed else 0.11, "target": 1e-5, "disagreements": miss, "passed": passed},
    ]  # fmt: skip
    report = {"run": run_dir.name, "images": "6 validation images and 8 made images of odd sizes", "passed": passed,
              "checks": checks, "skipped": [], "classes": ["red", "green", "blue"], "targets": {}}  # fmt: skip
    (bundle / "parity.json").write_text(json.dumps(report))
    (bundle / "bundle.json").write_text(json.dumps({"format": "vgg16-classifier-export"}))
    (bundle / "model.onnx").write_bytes(b"onnx" * 100)
    (bundle / "report.json").write_text(json.dumps(deployment_report(run_dir.name, loses)))
    return bundle


def test_export_starts_a_job_with_the_chosen_formats(trained_run, monkeypatch):
    import core.publish.export
    from core.jobs.kinds import EXPORT
    from core.jobs.registry import registry

    run = copy_run(trained_run)
    calls = []

    def fake_export(run_dir, out_dir, formats=None, int8=False, limit=200, progress=None, user=""):
        calls.append((run_dir.name, tuple(formats), int8))
        progress("exporting onnx", 0, 1)
        progress("timing onnx", 0, 1)
        write_bundle(run_dir)

        class Done:
            passed, path = True, out_dir / run_dir.name

        return Done()

    monkeypatch.setattr(core.publish.export, "export_run", fake_export)
    at = open_app("pages/runs.py", query={"run": run.name})
    assert any("compared with this app before it is offered" in c for c in texts(at.caption))
    choice = at.multiselect(key=f"export_formats_{run.name}")
    assert choice.value == ["saved_model", "litert", "litert-fp16", "litert-int8", "onnx"]  # every one by default
    choice.set_value(["onnx"]).run()
    button(at, "Export and check").click().run()
    assert_clean(at)
    (job,) = [j for j in registry().jobs() if j.kind == EXPORT]
    done = registry().wait(job.id, timeout=120)
    assert done.state == "completed", done.error
    assert calls == [(run.name, ("onnx",), False)]
    at.run()
    assert_clean(at)
    assert any("Every export agrees with the app on 6 validation images" in s for s in texts(at.success))
    (table,) = [f.value for f in at.dataframe if "result" in f.value]
    assert list(table["export"]) == ["saved_model", "onnx"] and list(table["result"]) == ["ok", "ok"]
    assert not at.warning  # no export loses against the app
    assert any(d.label.startswith("Download the bundle (.zip") for d in at.get("download_button"))


def test_a_missed_target_is_flagged_and_its_images_listed(trained_run):
    run = copy_run(trained_run)
    write_bundle(run, passed=False)
    at = open_app("pages/runs.py", query={"run": run.name})
    assert any("missed its parity target" in e and "Do not ship" in e for e in texts(at.error))
    frames = [f.value for f in at.dataframe]
    assert any("MISSED" in list(f.get("result", [])) for f in frames)
    assert any("val/red/3.png" in list(f.get("image", [])) for f in frames)
    assert any(e.label == "onnx (square uint8): 1 image differs" for e in at.expander)


def test_the_deployment_report_is_a_table_and_each_loss_a_warning(trained_run):
    run = copy_run(trained_run)
    write_bundle(run, loses=True)
    at = open_app("pages/runs.py", query={"run": run.name})
    assert_clean(at)
    (table,) = [f.value for f in at.dataframe if "p50, 1 thread (ms)" in f.value]
    assert list(table["export"]) == ["app (Keras)", "onnx", "litert-int8"]
    assert (
        list(table["p50, 1 thread (ms)"])[1:] == [3.5, 3.5] and list(table["p50, all threads (ms)"])[1:] == [2.25] * 2
    )
    assert list(table["size (MB)"])[1:] == [0.0004, 0.0001]
    assert list(table["agreement"])[1:] == [1.0, 5 / 6] and list(table["accuracy"])[1:] == [1.0, 5 / 6]
    assert texts(at.warning) == [
        "litert-int8: class 'green' loses 50.0 points (100.0 % → 50.0 %); agreement 83.3 % is below 99 %"
    ]
    (per_class,) = [f.value for f in at.dataframe if "Class" in f.value]
    assert list(per_class["litert-int8"]) == ["100.0 %", "50.0 %", "100.0 %"]
    assert any("calibrated on 27 training images" in c for c in texts(at.caption))


def test_a_bundle_from_before_the_report_shows_its_parity_alone(trained_run):
    run = copy_run(trained_run)
    (write_bundle(run) / "report.json").unlink()
    at = open_app("pages/runs.py", query={"run": run.name})
    assert_clean(at)
    assert any("Every export agrees" in s for s in texts(at.success))
    assert not [f for f in at.dataframe if "p50, 1 thread (ms)" in f.value] and not at.warning


def test_a_run_that_says_none_of_these_shows_how_often_each_export_agrees(trained_run):
    run = copy_run(trained_run)
    bundle = write_bundle(run)
    parity = json.loads((bundle / "parity.json").read_text())
    flipped = {"image": "made 13x17 RGB png", "app": "none of these (score 512)", "export": "a class (score 430)",
               "diff": 0.16, "why": "float rounding in the runtime"}  # fmt: skip
    for c, agreement in zip(parity["checks"], (1.0, 13 / 14), strict=True):
        c |= {"none_of_these_agreement": agreement, "max_score_diff": 2e-5, "score_target": 1e-4,
              "score_disagreements": [] if agreement == 1.0 else [flipped]}  # fmt: skip
    (bundle / "parity.json").write_text(json.dumps(parity))
    deployment = json.loads((bundle / "report.json").read_text())
    deployment["none_of_these"] = {"method": "mahalanobis-tied-ledoit-wolf", "threshold": 436.4, "rate": 0.05,
                                   "flagged": 0.0}  # fmt: skip
    for r in deployment["formats"]:
        r["none_of_these_agreement"] = 1.0
    (bundle / "report.json").write_text(json.dumps(deployment))
    at = open_app("pages/runs.py", query={"run": run.name})
    assert_clean(at)
    (table,) = [f.value for f in at.dataframe if "result" in f.value]
    assert list(table["none of these agreement"]) == [1.0, 13 / 14]
    assert any(e.label == "onnx (square uint8): 1 image differs on “none of these”" for e in at.expander)
    (report,) = [f.value for f in at.dataframe if "p50, 1 thread (ms)" in f.value]
    assert list(report["none of these agreement"])[1:] == [1.0, 1.0]
    assert any("an image scoring above 436.4" in c for c in texts(at.caption))
