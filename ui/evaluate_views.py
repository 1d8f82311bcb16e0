"""The Evaluate page's parts: the form that starts an evaluation job, the matrix, scores, pairs and the gallery."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.evaluate.evaluation import Evaluation, class_errors, images_root, saved_images_root
from core.imaging import pillow as images
from core.jobs.kinds import EVALUATE
from core.util.errors import UserError
from core.workspace.runs import RunInfo
from ui import charts, paging, session, tasks

FULL_MATRIX = 20  # up to this many classes the matrix shows them all; above, the most confused ones
CELL_LABELS = 15  # up to this many classes shown, each cell carries its number
GALLERY_PAGE = 12  # misclassified images a page: one page of thumbnails is decoded and drawn at a time
GALLERY_COLUMNS = 4
THUMB_SIZE = 224
ALL = "All classes"
ORDERS = {"name": "name", "recall": "recall (worst first)", "errors": "errors (most first)"}
# Widget and session-state keys (the per-run ones get the run id appended)
EVAL_JOB = "eval_job"  # session state: the evaluation this session started
EVAL_SOURCE = "eval_source"
EVAL_TOP_K = "eval_top_k"
MATRIX_SHARE = "matrix_share"
MATRIX_ORDER = "matrix_order"
MATRIX_CLASSES = "matrix_classes"
MATRIX_TOP_N = "matrix_top_n"
GALLERY_TRUE = "gallery_true"
GALLERY_PREDICTED = "gallery_predicted"
GALLERY_GRADCAM = "gallery_gradcam"
GALLERY_SHOWN = "gallery_shown"  # + run id, true and predicted class: the gallery's page on view (ui.paging)
GALLERY_NAMES = "gallery_names"  # + run id, true and predicted class: the page of names, the images gone
PAIRS_PAGE = "pairs_page"  # + run id: the page of the most confused pairs


@st.cache_data(show_spinner=False, max_entries=500)
def thumbnail(path: str, size: int, resize: str):
    """The image as the model saw it (its crop or pad), at a size a person can read."""
    return images.thumbnail(path, size, resize)


@st.cache_data(show_spinner=False, max_entries=500)
def gradcam_overlay(run_path: str, saved: str, image: str, class_name: str, layer: str):
    """(overlay, whether the map is empty): Grad-CAM of ``class_name`` once per run, image, class and layer."""
    from core.evaluate.explain import explain
    from core.model.predict import load_run

    e = explain(load_run(run_path), image, class_name, layer=layer)
    return e.overlay, not e.heatmap.any()


def describe(ev: Evaluation) -> tuple[str, str]:
    """(short name of the split, one sentence on which images were scored)."""
    if ev.source == "test":
        where = f"the test/ folder of {ev.data}, which training never used"
    elif ev.source == "val":
        where = f"the validation images of {ev.data} that training held out"
    elif ev.split == "test":
        where = f"the test/ folder of {ev.data}"
    else:
        where = f"the validation images of {ev.data} (its val/ folder, or the run's validation split if it has none)"
    when = f" Evaluated {ev.created.replace('T', ' ')}." if ev.created else ""
    return ("test" if ev.split == "test" else "validation"), f"{ev.images:,} images: {where}.{when}"


def evaluate_form(run: RunInfo) -> None:
    """Choose the images and k, press the button: an evaluation job starts (its progress is drawn by the page)."""
    held_out = saved_images_root(run.path)
    ds = session.dataset()
    options = {}
    if held_out is not None:
        options["saved"] = "The images this run held out from training"
    if ds is not None:
        options["session"] = f"The dataset on the Dataset page ({ds.title})"
    if not options:
        st.error(
            "The images this run held out from training are no longer on disk (the dataset it was trained on was "
            "deleted), so it cannot be evaluated now. Upload the same zip again on the Dataset page and come back "
            "to evaluate it on that.",
            icon=":material/broken_image:",
        )
        st.page_link("pages/dataset.py", label="Go to Dataset", icon=":material/folder_zip:")
        return
    c1, c2 = st.columns([3, 1])
    source = c1.radio("Evaluate on", list(options), format_func=options.get, key=f"{EVAL_SOURCE}_{run.id}")
    if source == "session":
        splits = {it.split for it in ds.items}
        which = (
            "its test/ folder" if "test" in splits
            else "its val/ folder" if "val" in splits
            else f"the {run.config.validation_split:.0%} of each class that a validation split with seed "
            f"{run.config.seed} holds out (as in training: if this run was trained on it, it never saw them)"
        )  # fmt: skip
        c1.caption(f"The images scored: {which}." + ("" if held_out else " The images this run held out are gone."))
    n = len(run.classes)
    k = 1
    if n > 2:  # with two classes the true class is always among the top two: top-2 accuracy says nothing
        k = c2.number_input(
            "Top-k accuracy: k", 1, n - 1, min(3, n - 1), key=f"{EVAL_TOP_K}_{run.id}",
            help="An image counts as right for top-k accuracy when its true class is among the k most likely.",
        )  # fmt: skip
    if st.button("Evaluate this run", type="primary", icon=":material/fact_check:"):
        tasks.start(EVAL_JOB, EVALUATE, {"run": run.id, "top_k": int(k)}, ds if source == "session" else None)


@st.fragment
def confusion_section(ev: Evaluation, run_id: str) -> None:
    st.subheader("Confusion matrix")
    n = len(ev.classes)
    errors = dict(zip(ev.classes, class_errors(ev), strict=True))
    recall = {r["class"]: r["recall"] for r in ev.per_class}
    c1, c2, c3 = st.columns([3, 2, 4], vertical_alignment="bottom")
    share = c1.toggle(
        "Share of each true class", key=MATRIX_SHARE,
        help="Off: numbers of images. On: each row divided by the images of its true class (recall on the diagonal).",
    )  # fmt: skip
    order = c2.selectbox("Order classes by", list(ORDERS), format_func=ORDERS.get, key=MATRIX_ORDER)
    picked = c3.multiselect(
        "Only these classes", ev.classes, key=f"{MATRIX_CLASSES}_{run_id}",
        placeholder="All classes" if n <= FULL_MATRIX else "The most confused classes",
    )  # fmt: skip
    shown = picked or ev.classes
    if not picked and n > FULL_MATRIX:
        top_n = st.slider("Most-confused classes to show", 2, n, FULL_MATRIX, key=f"{MATRIX_TOP_N}_{run_id}")
        shown = sorted(ev.classes, key=lambda c: (-errors[c], c))[:top_n]
        if top_n < n:
            st.caption(
                f"The {top_n} of {n} classes with the most errors (their images missed plus other images predicted "
                "as them). Choose classes above to see others."
            )
    key = {"name": lambda c: c.casefold(), "recall": lambda c: (recall[c], c), "errors": lambda c: (-errors[c], c)}
    shown = sorted(shown, key=key[order])
    chart = charts.confusion_matrix(ev.confusion, ev.classes, shown, share, labels=len(shown) <= CELL_LABELS)
    st.altair_chart(chart, width="content")


def per_class_section(ev: Evaluation, run_id: str) -> None:
    st.subheader("Per-class scores")
    table = pd.DataFrame(ev.per_class, columns=["class", "precision", "recall", "f1", "support"])
    confused = []
    for i, row in enumerate(ev.confusion):
        worst = max((j for j in range(len(row)) if j != i), key=lambda j: row[j], default=None)
        confused.append(f"{ev.classes[worst]} ({row[worst]})" if worst is not None and row[worst] else "")
    table["most often predicted as"] = confused
    score = {"format": "%.2f", "min_value": 0.0, "max_value": 1.0}
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "precision": st.column_config.ProgressColumn("precision", **score),
            "recall": st.column_config.ProgressColumn("recall", **score),
            "f1": st.column_config.ProgressColumn("F1", **score),
            "support": st.column_config.NumberColumn("images", help="images of this class evaluated"),
        },
    )
    st.download_button(
        "Download per-class scores (CSV)", table.to_csv(index=False).encode(), f"{run_id}-per-class.csv", "text/csv",
        icon=":material/download:",
    )  # fmt: skip


def confused_pairs_section(ev: Evaluation, run_id: str) -> None:
    st.subheader("Most confused")
    if not ev.most_confused:
        st.success("No class was mistaken for another.", icon=":material/check_circle:")
        return
    support = {r["class"]: r["support"] for r in ev.per_class}
    pairs = ev.most_confused  # up to one per pair of classes, and at most one per misclassified image

    def row(m: dict) -> dict:
        return {**m, "share": 100 * m["count"] / max(support[m["true"]], 1)}

    paging.paged_dataframe(
        pairs,
        f"{PAIRS_PAGE}_{run_id}",
        row=row,
        columns=["true", "predicted", "count", "share"],
        hide_index=True,
        width="stretch",
        height=min(400, 38 + 35 * min(len(pairs), paging.PAGE_ROWS)),
        column_config={
            "true": "true class",
            "predicted": "predicted as",
            "count": st.column_config.NumberColumn("images"),
            "share": st.column_config.ProgressColumn(
                "share of the true class", format="%.0f%%", min_value=0.0, max_value=100.0
            ),
        },
    )


def _first_page(run_id: str) -> None:
    """A filter changed: its gallery starts at its first page (the most confident mistakes of the new filter)."""
    true = st.session_state.get(f"{GALLERY_TRUE}_{run_id}", ALL)
    predicted = st.session_state.get(f"{GALLERY_PREDICTED}_{run_id}", ALL)
    for key in (GALLERY_SHOWN, GALLERY_NAMES):
        paging.first_page(f"{key}_{run_id}_{true}_{predicted}")


@st.fragment
def gallery_section(ev: Evaluation, run: RunInfo) -> None:
    path, run_id = run.path, run.id
    st.subheader("Misclassified images")
    if not ev.misclassified:
        st.success("Every evaluated image was classified right.", icon=":material/check_circle:")
        return
    f1, f2, f3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    true = f1.selectbox(
        "True class", [ALL, *sorted({m["true"] for m in ev.misclassified})], key=f"{GALLERY_TRUE}_{run_id}",
        on_change=_first_page, args=(run_id,),
    )  # fmt: skip
    predicted = f2.selectbox(
        "Predicted class", [ALL, *sorted({m["predicted"] for m in ev.misclassified})],
        key=f"{GALLERY_PREDICTED}_{run_id}", on_change=_first_page, args=(run_id,),
    )  # fmt: skip
    cam = f3.toggle(
        "Show where the model looked (Grad-CAM)", key=GALLERY_GRADCAM,
        help="A heat map of the evidence for the predicted class, over the image as the model saw it.",
    )  # fmt: skip
    items = [
        m for m in ev.misclassified
        if true in (ALL, m["true"]) and predicted in (ALL, m["predicted"])
    ]  # fmt: skip
    st.caption(f"{len(items):,} of {len(ev.misclassified):,} misclassified images, the most confident mistakes first.")
    root = images_root(ev, path)
    if root is None:
        st.warning(
            "These images are no longer on disk (the dataset was a temporary copy), so they cannot be shown; their "
            "names are listed instead. Load the dataset again on the Dataset page and evaluate again to see them.",
            icon=":material/broken_image:",
        )
        paging.paged_dataframe(
            items, f"{GALLERY_NAMES}_{run_id}_{true}_{predicted}", columns=["file", "true", "predicted", "probability"],
            hide_index=True, width="stretch",
            column_config={"probability": st.column_config.NumberColumn("probability", format="percent")},
        )  # fmt: skip
        return
    layer = None
    if cam:
        from core.evaluate.explain import default_layer  # the model is needed from here on; TensorFlow loads with it
        from core.model.predict import load_run

        with st.spinner("Loading the model…"):
            layer = default_layer(load_run(path))
        st.caption(
            f"Heat maps of the predicted class, from layer {layer}"
            + (": this run started from random weights, and after a short training its last block says little."
               if run.config.weights == "none" else ".")
        )  # fmt: skip
    grid = st.container()  # the page's images above the control that picks them
    shown = paging.pager(len(items), GALLERY_PAGE, f"{GALLERY_SHOWN}_{run_id}_{true}_{predicted}", "Images")
    with grid:
        _gallery_page(items[shown], root, run, layer)


def _gallery_page(items: list[dict], root: Path, run: RunInfo, layer: str | None) -> None:
    """One page of the gallery: each image (or its Grad-CAM from ``layer``) with its true and predicted class."""
    for i, m in enumerate(items):
        if i % GALLERY_COLUMNS == 0:
            cols = st.columns(GALLERY_COLUMNS)  # one row at a time: reading order is worst first
        col = cols[i % GALLERY_COLUMNS]
        image, name = root / m["file"], Path(m["file"]).name
        empty = False
        try:
            if layer:
                with st.spinner(f"Grad-CAM of {name}…"):
                    picture, empty = gradcam_overlay(str(run.path), run.finished, str(image), m["predicted"], layer)
            else:
                picture = thumbnail(str(image), THUMB_SIZE, run.config.resize)
        except (UserError, OSError) as exc:
            col.warning(f"{name}: {exc}" if image.is_file() else f"{name} is no longer on disk.")
        else:
            col.image(picture, caption=name + (" · nothing here speaks for it" if empty else ""), width="stretch")
        true, predicted = session.escape(m["true"]), session.escape(m["predicted"])
        col.markdown(f"true **{true}** · predicted **{predicted}** {m['probability']:.0%}")
