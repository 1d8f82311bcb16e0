"""The Runs page's parts: the runs table, deleting a run, comparing runs, the feature cache."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.evaluate.compare import MAX_RUNS, MIN_RUNS, Comparison, compare
from core.train.cache import ArrayCache
from core.util.errors import UserError
from core.workspace import access
from core.workspace.runs import RunInfo, delete_run
from ui import charts, paging, session
from ui.session import RUN_PARAM, flash
from ui.versions_views import compare_versions

# Widget keys. COMPARE is also the query parameter (?compare=<id>&compare=<id>): a comparison is a shareable link.
COMPARE = "compare"
COMPARE_ONLY_DIFFERENT = "compare_only_different"
COMPARE_TRAIN_CURVES = "compare_train_curves"
DELETE_POPOVER = "delete_popover"
RUNS_PAGE = "runs_page"  # session state: the page of the runs table on view (ui.paging)
DIFFERENT = "background-color: rgba(255, 171, 64, 0.35)"  # readable on the light and the dark theme
BEST = "background-color: rgba(33, 195, 84, 0.25)"
PERCENT = {"format": "percent"}
# The runs table: the columns that tell runs apart first, so they stay on screen on a laptop.
RUN_COLUMNS = {
    "id": st.column_config.TextColumn("Run", pinned=True, width="medium"),
    "val_accuracy": st.column_config.NumberColumn("Val accuracy", **PERCENT),
    "status": st.column_config.TextColumn("Status"),
    "dataset": st.column_config.TextColumn("Dataset"),
    "classes": st.column_config.NumberColumn("Classes", format="%d"),
    "epochs": st.column_config.NumberColumn("Epochs", format="%d"),
    "finished": st.column_config.DatetimeColumn("Finished", format="D MMM YYYY, HH:mm"),
    "owner": st.column_config.TextColumn("By"),
    "backbone": st.column_config.TextColumn("Backbone"),
    "head": st.column_config.TextColumn("Head"),
    "weights": st.column_config.TextColumn("Weights"),
    "image_size": st.column_config.NumberColumn("Image size", format="%d px"),
    "optimizer": st.column_config.TextColumn("Optimizer"),
}
# Comparison metrics: the key ones in the first table, the rest behind an expander.
KEY_METRICS = ("run", "val_accuracy", "val_loss", "best_val_accuracy", "best_epoch", "eval_accuracy",
               "epochs_completed", "seconds")  # fmt: skip
METRIC_COLUMNS = {
    "run": st.column_config.TextColumn("Run", pinned=True, width="medium"),
    "val_accuracy": st.column_config.NumberColumn("Val accuracy", **PERCENT),
    "val_loss": st.column_config.NumberColumn("Val loss", format="%.4f"),
    "train_accuracy": st.column_config.NumberColumn("Train accuracy", **PERCENT),
    "train_loss": st.column_config.NumberColumn("Train loss", format="%.4f"),
    "best_val_accuracy": st.column_config.NumberColumn("Best val accuracy", **PERCENT),
    "best_epoch": st.column_config.NumberColumn("Best at epoch", format="%d"),
    "eval_accuracy": st.column_config.NumberColumn("Evaluation accuracy", **PERCENT),
    "eval_loss": st.column_config.NumberColumn("Evaluation loss", format="%.4f"),
    "eval_images": st.column_config.NumberColumn("Evaluated images", format="%d"),
    "epochs_completed": st.column_config.NumberColumn("Epochs", format="%d"),
    "train_images": st.column_config.NumberColumn("Train images", format="%d"),
    "val_images": st.column_config.NumberColumn("Val images", format="%d"),
    "trainable": st.column_config.NumberColumn("Trainable params", format="compact"),
    "frozen": st.column_config.NumberColumn("Frozen params", format="compact"),
    "path": st.column_config.TextColumn("Training path"),
    "precision": st.column_config.TextColumn("Precision"),
    "status": st.column_config.TextColumn("Status"),
    "started": st.column_config.TextColumn("Started"),
    "seconds": st.column_config.NumberColumn("Seconds", format="%.1f"),
}
HIGHER_IS_BETTER = {"val_accuracy": True, "val_loss": False, "best_val_accuracy": True, "eval_accuracy": True,
                    "eval_loss": False}  # fmt: skip


def _run_row(run: RunInfo) -> dict:
    row = run.summary()
    return {**row, "finished": pd.to_datetime(row["finished"], errors="coerce"), "owner": access.display(row["owner"])}


def runs_table(runs: list[RunInfo]) -> None:
    paging.paged_dataframe(runs, RUNS_PAGE, row=_run_row, columns=list(RUN_COLUMNS), noun="Runs", hide_index=True,
                           width="stretch", column_config=RUN_COLUMNS)  # fmt: skip


def _delete(run: RunInfo) -> None:
    """The confirmation's callback: runs before the next script run, so the popover is drawn closed."""
    try:
        delete_run(run.path, session.user())
    except UserError as exc:
        flash(str(exc), error=True)
        return
    st.session_state[DELETE_POPOVER] = False
    st.query_params.pop(RUN_PARAM, None)
    flash(f"Deleted run {run.id}.")


def delete_button(column, run: RunInfo) -> None:
    if not access.may_change(session.user(), run.owner):
        column.caption(f"Trained by {session.escape(access.display(run.owner))}: only they or an admin may delete it.")
        return
    # A popover with state (on_change="rerun"): the confirmation's callback closes it, so it never stays open
    # asking about the next run.
    with column.popover("Delete run", icon=":material/delete:", key=DELETE_POPOVER, on_change="rerun"):
        st.write(f"Delete **{run.id}** for everyone on this server? Its model and files are removed for good.")
        st.button("Yes, delete it", icon=":material/delete_forever:", on_click=_delete, args=(run,),
                  key=f"delete_{run.id}")  # fmt: skip


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
    st.dataframe(styled, width="stretch", height="content",
                 column_config={"_index": st.column_config.TextColumn("setting", pinned=True)})  # fmt: skip


def curves(cmp: Comparison) -> None:
    if not cmp.history:
        st.caption("None of these runs saved its per-epoch history.")
        return
    train = st.toggle("Show the training curves too (dashed)", key=COMPARE_TRAIN_CURVES)
    left, right = st.columns(2)
    for column, metric, title in ((left, "accuracy", "Validation accuracy"), (right, "loss", "Validation loss")):
        column.altair_chart(charts.run_curves(cmp.history, metric, title, cmp.labels, train), width="stretch")


def _metrics_frame(table: pd.DataFrame) -> None:
    styled = table.style
    for column, higher in HIGHER_IS_BETTER.items():
        if column in table and table[column].nunique() > 1:
            best = styled.highlight_max if higher else styled.highlight_min
            styled = best(subset=[column], props=BEST)
    st.dataframe(styled, hide_index=True, width="stretch", column_config=METRIC_COLUMNS, placeholder="—")


def metrics_table(cmp: Comparison) -> None:
    st.markdown("**Final metrics**")
    table = pd.DataFrame(cmp.metrics).dropna(axis="columns", how="all")  # no evaluation yet: no evaluation columns
    _metrics_frame(table[[c for c in KEY_METRICS if c in table]])
    st.caption("Green: the best of these runs. Evaluation columns appear once a run has been evaluated.")
    with st.expander("Every metric"):
        _metrics_frame(table)


def compare_section(runs: list[RunInfo]) -> None:
    st.subheader("Compare runs")
    if len(runs) < MIN_RUNS:
        st.caption("Train a second model to compare runs side by side.")
        return
    paths = {r.id: r.path for r in runs}
    by_id = {r.id: r for r in runs}
    picked = st.multiselect(
        "Runs to compare", list(paths), key=COMPARE, max_selections=MAX_RUNS, bind="query-params",
        placeholder="Pick runs",
    )  # fmt: skip
    st.caption(
        f"Pick {MIN_RUNS} to {MAX_RUNS} runs: their settings side by side with the differences highlighted, "
        "their validation curves overlaid and their final metrics in one table."
    )
    if len(picked) < MIN_RUNS:
        return
    try:
        cmp = compare([paths[i] for i in picked if i in paths])
    except UserError as exc:
        session.error(exc)
        return
    settings_table(cmp)
    compare_versions([by_id[i] for i in picked if i in by_id])
    curves(cmp)
    metrics_table(cmp)
