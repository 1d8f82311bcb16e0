"""The Runs page's export section through AppTest: start an export job, read its parity report, flag a miss."""

from __future__ import annotations

import json

from pagetest import assert_clean, button, copy_run, open_app, texts


def write_bundle(run_dir, passed: bool = True):
    """A bundle as core.publish.export leaves it (its report written here: the real export is tested in test_export)."""
    from core.publish.bundles import exports_dir

    bundle = exports_dir(run_dir) / run_dir.name
    bundle.mkdir(parents=True)
    miss = [] if passed else [{"image": "val/red/3.png", "app": "red 0.6000", "export": "blue 0.5100",
                               "diff": 0.11, "why": "float rounding in the runtime"}]  # fmt: skip
    checks = [
        {"format": "savedmodel", "input": "encoded bytes", "images": 14, "top1_agreement": 1.0,
         "max_abs_diff": 3e-7, "target": 1e-3, "disagreements": [], "passed": True},
        {"format": "onnx", "input": "square uint8", "images": 14, "top1_agreement": 1.0 if passed else 13 / 14,
         "max_abs_diff": 2e-7 if passed else 0.11, "target": 1e-5, "disagreements": miss, "passed": passed},
    ]  # fmt: skip
    report = {"run": run_dir.name, "images": "6 validation images and 8 made images of odd sizes", "passed": passed,
              "checks": checks, "skipped": [], "classes": ["red", "green", "blue"], "targets": {}}  # fmt: skip
    (bundle / "parity.json").write_text(json.dumps(report))
    (bundle / "bundle.json").write_text(json.dumps({"format": "vgg16-classifier-export"}))
    (bundle / "model.onnx").write_bytes(b"onnx" * 100)
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
        write_bundle(run_dir)

        class Done:
            passed, path = True, out_dir / run_dir.name

        return Done()

    monkeypatch.setattr(core.publish.export, "export_run", fake_export)
    at = open_app("pages/runs.py", query={"run": run.name})
    assert any("compared with this app before it is offered" in c for c in texts(at.caption))
    at.multiselect(key=f"export_formats_{run.name}").set_value(["onnx"]).run()
    assert at.checkbox(key=f"export_int8_{run.name}").disabled  # int8 is a LiteRT option
    button(at, "Export and check").click().run()
    assert_clean(at)
    (job,) = [j for j in registry().jobs() if j.kind == EXPORT]
    done = registry().wait(job.id, timeout=120)
    assert done.state == "completed", done.error
    assert calls == [(run.name, ("onnx",), False)]
    at.run()
    assert_clean(at)
    assert any("Every export agrees with the app on 6 validation images" in s for s in texts(at.success))
    table = at.dataframe[-1].value
    assert list(table["export"]) == ["savedmodel", "onnx"] and list(table["result"]) == ["ok", "ok"]
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
