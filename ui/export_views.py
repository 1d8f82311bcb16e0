"""The Runs page's export section: pick formats, export as a job, read the parity report, download the bundle.

    export_section(run)     # one call on the Runs page

The export runs as a job (``core.publish.export`` in a worker: converting VGG16 takes tens of seconds per format); its
bundle is kept in the run's folder, so everyone finds the last export of a run and its report after a reload.
"""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from core.jobs.kinds import EXPORT
from core.publish.bundles import FORMATS, bundle_zip, load_report, saved_bundle
from core.workspace.runs import RunInfo
from ui import session, tasks

MAX_ZIP_BYTES = 600 * 1024**2  # a bundle zipped for download is held in the server's memory once
EXPORT_JOB = "export_job"  # session state: the export this session started
EXPORT_FORMATS = "export_formats"  # + run id
EXPORT_INT8 = "export_int8"  # + run id
FORMAT_NAMES = {
    "savedmodel": "SavedModel (TensorFlow Serving; takes encoded images)",
    "litert": "LiteRT .tflite (phones; takes the square image)",
    "onnx": "ONNX (onnxruntime; takes the square image)",
}


def _start(run: RunInfo) -> None:
    formats = st.multiselect("Formats", list(FORMATS), default=list(FORMATS), format_func=FORMAT_NAMES.get,
                             key=f"{EXPORT_FORMATS}_{run.id}")  # fmt: skip
    int8 = st.checkbox(
        "Also a LiteRT file with int8 weights (a quarter of the size; probabilities differ slightly)",
        key=f"{EXPORT_INT8}_{run.id}",
        disabled="litert" not in formats,
    )
    if st.button("Export and check", icon=":material/ios_share:", disabled=not formats, key=f"export_{run.id}"):
        tasks.start(EXPORT_JOB, EXPORT, {"run": run.id, "formats": formats, "int8": int8 and "litert" in formats})
        st.rerun()  # draw the job's progress


def parity_table(report: dict) -> None:
    rows = [
        {"export": c["format"], "input": c["input"], "images": c["images"], "top-1 agreement": c["top1_agreement"],
         "largest difference": f"{c['max_abs_diff']:.1e}",
         "target": "report only" if c["target"] is None else f"≤ {c['target']:g}",
         "result": "ok" if c["passed"] else "MISSED"}
        for c in report["checks"]
    ]  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "top-1 agreement": st.column_config.NumberColumn(format="percent"),
    })  # fmt: skip
    for c in report["checks"]:
        if c["disagreements"]:
            n = len(c["disagreements"])
            with st.expander(f"{c['format']} ({c['input']}): {n} image{'s differ' if n != 1 else ' differs'}"):
                st.dataframe(pd.DataFrame(c["disagreements"]), hide_index=True, width="stretch")


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
            "in its own runtime on the validation images and compared with this app before it is offered."
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
