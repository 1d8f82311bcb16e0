"""Altair charts shared by the pages (data in, chart out; no state)."""

from __future__ import annotations

import altair as alt
import pandas as pd


def class_counts(counts: dict[str, dict[str, int]]) -> alt.Chart:
    """Horizontal bars of images per class, stacked by split when the dataset has one."""
    df = pd.DataFrame([{"class": c, "split": s, "images": n} for c, by in counts.items() for s, n in by.items()])
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("sum(images):Q", title="images", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("class:N", sort="-x", title=None),
            color=alt.Color("split:N", title="split", sort=["train", "val", "test", "all"]),
            tooltip=["class", "split", "images"],
        )
        .properties(height={"step": 26})
    )


def epoch_curves(rows: list[dict], metric: str, title: str) -> alt.Chart:
    """Train vs validation ``metric`` per epoch (``loss`` or ``accuracy``)."""
    df = pd.DataFrame(rows)
    data = []
    for name, col in (("train", metric), ("validation", f"val_{metric}")):
        if col in df:
            data += [{"epoch": int(e), "value": v, "set": name} for e, v in zip(df["epoch"], df[col], strict=True)]
    return (
        alt.Chart(pd.DataFrame(data, columns=["epoch", "value", "set"]), title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("value:Q", title=metric),
            color=alt.Color("set:N", title=None, sort=["train", "validation"]),
            tooltip=["epoch", "set", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=240)
    )


def batch_loss(rows: list[dict]) -> alt.Chart:
    df = pd.DataFrame(rows, columns=["step", "epoch", "loss"])
    return (
        alt.Chart(df, title="Loss per batch")
        .mark_line(point=len(df) < 50)
        .encode(
            x=alt.X("step:Q", title="batch", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("loss:Q"),
            tooltip=["step", "epoch", "loss"],
        )
        .properties(height=240)
    )


def top_k(top: list[tuple[str, float]]) -> alt.Chart:
    """Horizontal bars of the top-k class probabilities, most likely on top."""
    df = pd.DataFrame(top, columns=["class", "probability"])
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y("class:N", sort="-x", title=None),
            tooltip=["class", alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height={"step": 28})
    )
