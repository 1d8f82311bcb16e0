"""Runs: every saved model on this server, its history, download and delete; 2-5 runs compared side by side."""

from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from core import UserError
from core.cache import ArrayCache
from core.compare import MAX_RUNS, MIN_RUNS, Comparison, compare
from core.runs import delete_run, export_zip, history, list_runs, read_json
from pages import charts
from pages.common import RUN_PARAM, init_session

# Widget keys. COMPARE is also the query parameter (?compare=<id>&compare=<id>): a comparison is a shareable link.
COMPARE = "compare"
COMPARE_ONLY_DIFFERENT = "compare_only_different"
COMPARE_TRAIN_CURVES = "compare_train_curves"
DIFFERENT = "background-color: rgba(255, 171, 64, 0.35)"  # readable on the light and the dark theme
BEST = "background-color: rgba(33, 195, 84, 0.25)"

init_session()
st.title("Runs")


def cache_panel() -> None:
    cache = ArrayCache()
    info = cache.info()
    with st.expander(f"Cache of frozen-layer features and decoded images: {info['bytes'] / 1024**2:,.0f} MB"):
        st.write(
            "Training again on the same photos with other head or optimizer settings reads the frozen layers' "
            f"outputs from here instead of computing them again. {info['entries']:,} entries, limit "
            f"{info['limit_bytes'] / 1024**2:,.0f} MB; the least recently used go first."
        )
        if st.button("Clear the cache", icon=":material/delete_sweep:", disabled=not info["entries"]):
            st.toast(f"Cleared {cache.clear() / 1024**2:,.1f} MB")
            st.rerun()


def show(value) -> str:
    """A setting as text: one column holds every type, and 1e-06 reads better than 0.000001."""
    if value is None:
        return "—"  # not recorded: the run's app version had no such setting
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_table(cmp: Comparison) -> None:
    st.markdown("**Settings**")
    if cmp.differing:
        st.caption(f"{len(cmp.differing)} of {len(cmp.settings)} settings differ: {', '.join(cmp.differing)}.")
    else:
        st.caption("Every setting is the same in these runs.")
    only = st.toggle("Show only the settings that differ", key=COMPARE_ONLY_DIFFERENT)
    names = cmp.differing if only else list(cmp.settings)
    if not names:
        return
    table = pd.DataFrame(
        {label: [show(cmp.settings[n][i]) for n in names] for i, label in enumerate(cmp.labels)},
        index=pd.Index(names, name="setting"),
    )
    styled = table.style.apply(lambda row: [DIFFERENT if row.name in cmp.differing else ""] * len(row), axis=1)
    st.dataframe(
        styled,
        width="stretch",
        height="content",
        column_config={"_index": st.column_config.TextColumn("setting", pinned=True)},
    )


def curves(cmp: Comparison) -> None:
    if not cmp.history:
        st.caption("None of these runs saved its per-epoch history.")
        return
    train = st.toggle("Show the training curves too (dashed)", key=COMPARE_TRAIN_CURVES)
    left, right = st.columns(2)
    for column, metric, title in ((left, "accuracy", "Validation accuracy"), (right, "loss", "Validation loss")):
        column.altair_chart(charts.run_curves(cmp.history, metric, title, cmp.labels, train), width="stretch")


# Every number has a format: a column with a missing value is float, which the Styler would show as 12.000000.
METRIC_COLUMNS = {
    "run": st.column_config.TextColumn("run", pinned=True, width="medium"),  # run ids are long
    "val_accuracy": st.column_config.NumberColumn("val accuracy", format="percent"),
    "val_loss": st.column_config.NumberColumn("val loss", format="%.4f"),
    "train_accuracy": st.column_config.NumberColumn("train accuracy", format="percent"),
    "train_loss": st.column_config.NumberColumn("train loss", format="%.4f"),
    "best_val_accuracy": st.column_config.NumberColumn("best val accuracy", format="percent"),
    "best_epoch": st.column_config.NumberColumn("best at epoch", format="%d"),
    "eval_accuracy": st.column_config.NumberColumn("evaluation accuracy", format="percent"),
    "eval_loss": st.column_config.NumberColumn("evaluation loss", format="%.4f"),
    "eval_images": st.column_config.NumberColumn("evaluated images", format="%d"),
    "epochs_completed": st.column_config.NumberColumn("epochs", format="%d"),
    "train_images": st.column_config.NumberColumn("train images", format="%d"),
    "val_images": st.column_config.NumberColumn("val images", format="%d"),
    "trainable": st.column_config.NumberColumn("trainable params", format="compact"),
    "frozen": st.column_config.NumberColumn("frozen params", format="compact"),
    "path": st.column_config.TextColumn("training path"),
    "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
}
HIGHER_IS_BETTER = {"val_accuracy": True, "val_loss": False, "best_val_accuracy": True, "eval_accuracy": True,
                    "eval_loss": False}  # fmt: skip


def metrics_table(cmp: Comparison) -> None:
    st.markdown("**Final metrics**")
    table = pd.DataFrame(cmp.metrics).dropna(axis="columns", how="all")  # no evaluation yet: no evaluation columns
    styled = table.style
    for column, higher in HIGHER_IS_BETTER.items():
        if column in table and table[column].nunique() > 1:
            best = styled.highlight_max if higher else styled.highlight_min
            styled = best(subset=[column], props=BEST)
    st.dataframe(styled, hide_index=True, width="stretch", column_config=METRIC_COLUMNS, placeholder="—")
    st.caption("Green: the best of these runs. Evaluation columns appear once a run has been evaluated.")


def compare_section(runs: list[dict]) -> None:
    st.subheader("Compare runs")
    ids = [r["id"] for r in runs]
    if len(ids) < MIN_RUNS:
        st.caption("Train a second model to compare runs side by side.")
        return
    picked = st.multiselect(
        "Runs to compare", ids, key=COMPARE, max_selections=MAX_RUNS, bind="query-params", placeholder="Pick runs"
    )
    st.caption(
        f"Pick {MIN_RUNS} to {MAX_RUNS} runs: their settings side by side with the differences highlighted, "
        "their validation curves overlaid and their final metrics in one table."
    )
    if len(picked) < MIN_RUNS:
        return
    paths = {r["id"]: r["path"] for r in runs}
    try:
        cmp = compare([paths[i] for i in picked])
    except UserError as exc:
        st.error(str(exc))
        return
    settings_table(cmp)
    curves(cmp)
    metrics_table(cmp)


runs = list_runs()
if not runs:
    cache_panel()
    st.info("No saved runs yet: train a model and it appears here for everyone on this server.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

table = pd.DataFrame(runs)
columns = ["id", "finished", "status", "dataset", "classes", "head", "weights", "image_size", "optimizer",
           "epochs_completed", "val_accuracy"]  # fmt: skip
st.dataframe(
    table[[c for c in columns if c in table]],
    hide_index=True,
    width="stretch",
    column_config={"val_accuracy": st.column_config.NumberColumn("val accuracy", format="percent")},
)

ids = [r["id"] for r in runs]
wanted = st.query_params.get(RUN_PARAM)
run = st.selectbox("Run", runs, index=ids.index(wanted) if wanted in ids else 0, format_func=lambda r: r["id"])
path = Path(run["path"])
rows = history(path)
if rows:
    rows = [{**r, "epoch": int(r["epoch"]) + 1} for r in rows]  # CSVLogger counts epochs from 0
    left, right = st.columns(2)
    p2 = (read_json(path / "metrics.json") or {}).get("phase2_start_epoch")
    left.altair_chart(charts.epoch_curves(rows, "loss", "Loss per epoch", p2), width="stretch")
    right.altair_chart(charts.epoch_curves(rows, "accuracy", "Accuracy per epoch", p2), width="stretch")
with st.expander("Settings"):
    st.json(read_json(path / "config.json"))

c0, c1, c2, c3 = st.columns(4)
c0.page_link("pages/evaluate.py", label="Evaluate this run", icon=":material/fact_check:",
             query_params={RUN_PARAM: run["id"]})  # fmt: skip
c1.page_link("pages/classify.py", label="Classify with this run", icon=":material/image_search:",
             query_params={RUN_PARAM: run["id"]})  # fmt: skip
c2.download_button(  # zipped on click only: compressing the model takes seconds, too long for every rerun
    "Download run (.zip)", partial(export_zip, path), f"{run['id']}.zip", "application/zip",
    icon=":material/download:",
)  # fmt: skip
with c3.popover("Delete run", icon=":material/delete:"):
    st.write(f"Delete **{run['id']}** for everyone on this server? This cannot be undone.")
    if st.button("Yes, delete it", type="primary"):
        try:
            delete_run(path)
        except UserError as exc:
            st.error(str(exc))
        else:
            st.toast(f"Deleted {run['id']}")
            st.rerun()

compare_section(runs)
cache_panel()
