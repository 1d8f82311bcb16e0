"""The Runs page's export section: pick formats, export as a job, read the parity and deployment reports (size,
latency, accuracy per class, ECE, warnings), download the bundle.

    export_section(run)     # one call on the Runs page

The export runs as a job (``core.publish.export`` in a worker: converting VGG16 takes tens of seconds per format); its
bundle is kept in the run's folder, so everyone finds the last export of a run and its report after a reload.
"""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from core.jobs.kinds import EXPORT
from core.publish import report as deployment
from core.publish.bundles import FORMATS, bundle_zip, load_report, saved_bundle
from core.workspace.runs import RunInfo
from ui import session, tasks

MAX_ZIP_BYTES = 600 * 1024**2  # a bundle zipped for download is held in the server's memory once
EXPORT_JOB = "export_job"  # session state: the export this session started
EXPORT_FORMATS = "export_formats"  # + run id
FORMAT_NAMES = {
    "saved_model": "SavedModel (TensorFlow Serving; takes encoded images)",
    "litert": "LiteRT .tflite (phones; takes the square image)",
    "litert-fp16": "LiteRT, float16 weights (half the size)",
    "litert-int8": "LiteRT, full-integer int8 (a quarter of the size; calibrated on training images)",
    "onnx": "ONNX (onnxruntime; takes the square image)",
}


def _start(run: RunInfo) -> None:
    formats = st.multiselect("Formats", list(FORMATS), default=list(FORMATS), format_func=FORMAT_NAMES.get,
                             key=f"{EXPORT_FORMATS}_{run.id}")  # fmt: skip
    if st.button("Export and check", icon=":material/ios_share:", disabled=not formats, key=f"export_{run.id}"):
        tasks.start(EXPORT_JOB, EXPORT, {"run": run.id, "formats": formats})
        st.rerun()  # draw the job's progress


def parity_table(report: dict) -> None:
    scored = any(c.get("none_of_these_agreement") is not None for c in report["checks"])  # a run that can say it
    rows = [
        {"export": c["format"], "input": c["input"], "images": c["images"], "top-1 agreement": c["top1_agreement"],
         "largest difference": f"{c['max_abs_diff']:.1e}",
         "target": "report only" if c["target"] is None else f"≤ {c['target']:g}",
         **({"none of these agreement": c.get("none_of_these_agreement"),
             "largest score difference": "—" if c.get("max_score_diff") is None else f"{c['max_score_diff']:.1e}"}
            if scored else {}),
         "result": "ok" if c["passed"] else "MISSED"}
        for c in report["checks"]
    ]  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "top-1 agreement": st.column_config.NumberColumn(format="percent"),
        "none of these agreement": st.column_config.NumberColumn(format="percent"),
    })  # fmt: skip
    for c in report["checks"]:
        for what, found in (("", c["disagreements"]), (" on “none of these”", c.get("score_disagreements"))):
            if found:
                n = len(found)
                with st.expander(
                    f"{c['format']} ({c['input']}): {n} image{'s differ' if n != 1 else ' differs'}{what}"
                ):
                    st.dataframe(pd.DataFrame(found), hide_index=True, width="stretch")


def deployment_section(report: dict) -> None:
    """The deployment report: one row per export (size, latency, agreement, accuracy, ECE), accuracy per class,
    and each warning."""
    st.markdown("**Deployment**")
    app = report["app"]
    rows = [{"export": "app (Keras)", "size (MB)": None, "p50, 1 thread (ms)": None, "p50, all threads (ms)": None,
             "agreement": None, "accuracy": app.get("accuracy"), "ECE": app.get("ece")}]  # fmt: skip
    rows += [
        {"export": r["format"], "size (MB)": r["bytes"] / 1e6, "p50, 1 thread (ms)": deployment.p50(r, "one"),
         "p50, all threads (ms)": deployment.p50(r, "all"), "agreement": r.get("agreement"),
         "accuracy": r.get("accuracy"), "ECE": r.get("ece")}
        for r in report["formats"]
    ]  # fmt: skip
    if unlike := report.get("none_of_these"):  # a run that can say it: how often each export says it as the app does
        for row, r in zip(rows, [{}, *report["formats"]], strict=True):
            row["none of these agreement"] = r.get("none_of_these_agreement")
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "size (MB)": st.column_config.NumberColumn(format="%.1f"),
        "p50, 1 thread (ms)": st.column_config.NumberColumn(format="%.2f"),
        "p50, all threads (ms)": st.column_config.NumberColumn(format="%.2f"),
        "agreement": percent, "accuracy": percent, "ECE": st.column_config.NumberColumn(format="%.3f"),
        "none of these agreement": percent,
    })  # fmt: skip
    st.caption(
        f"On {report['images']}; {report['threads']['all']} threads is every core of this server. Latency: "
        f"{report['latency']}."
        + (f" litert-int8 was calibrated on {report['representative']}." if report.get("representative") else "")
        + (f" {deployment.none_of_these_words(unlike)}" if unlike else "")
    )
    for warning in report["warnings"]:
        st.warning(warning, icon=":material/warning:")
    with st.expander("Accuracy per class"):
        header, per_class = deployment.class_table(report)
        st.dataframe(pd.DataFrame(per_class, columns=header), hide_index=True, width="stretch")


def export_section(run: RunInfo) -> None:
    st.subheader("Export")
    finished = tasks.follow(EXPORT_JOB)
    if finished is not None and finished.error:
        session.error(finished.error, icon=":material/error:")
    if st.session_state.get(EXPORT_JOB):
        return  # running: its progress is drawn above
    bundle = saved_bundle(run.path)
    if bundle is None:
        st.caption(
            "Exports carry the preprocessing inside (the SavedModel from the encoded file; LiteRT and ONNX from the "
            "square image, normalisation inside) and labels.txt, a model card and examples beside them. Each is run "
            "in its own runtime on the validation images and compared with this app before it is offered; the "
            "deployment report gives each one's size, speed on one image, and accuracy per class against this app."
        )
        _start(run)
        return
    try:
        report = load_report(bundle)
    except (OSError, ValueError) as exc:
        st.error(f"The last export's report cannot be read ({exc}): export again.", icon=":material/error:")
        _start(run)
        return
    if report.get("passed"):
        st.success(f"Every export agrees with the app on {report['images']}.", icon=":material/verified:")
    else:
        st.error(
            "An export missed its parity target (below): it would not answer as this app does. Do not ship it; "
            "the report lists each image that differs and why.",
            icon=":material/report:",
        )
    parity_table(report)
    try:
        measured = deployment.load_deployment(bundle)
    except (OSError, ValueError) as exc:
        st.error(f"The last export's deployment report cannot be read ({exc}): export again.", icon=":material/error:")
    else:
        if measured is not None:  # None: a bundle made before the report
            deployment_section(measured)
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    if size <= MAX_ZIP_BYTES:
        st.download_button(
            f"Download the bundle (.zip, {size / 1e6:,.0f} MB)", partial(bundle_zip, bundle),
            f"{bundle.name}-export.zip", "application/zip", icon=":material/download:", key=f"export_download_{run.id}",
        )  # fmt: skip
        st.caption(f"On the server: {bundle}")
    else:  # zipped in the server's memory on click: a vgg-fc bundle (four 540 MB models) is copied from the folder
        st.info(f"The bundle is {size / 1e9:,.1f} GB, too large to zip in the browser: copy it from the server's "
                f"folder {bundle}.", icon=":material/folder:")  # fmt: skip
    with st.expander("Export again"):
        _start(run)
