"""Altair charts shared by the pages (data in, chart out; no state)."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

EPOCH_AXIS = alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d"))
SETS = ["train", "validation"]
SET_COLOURS = ["#1f77b4", "#ff7f0e"]


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


def metric_axis(metric: str) -> alt.Y:
    """A loss axis follows the data (from 0 it flattens curves that differ in the decimals); accuracy keeps 0-100 %."""
    return alt.Y(
        "value:Q",
        title=metric,
        scale=alt.Scale(zero=metric == "accuracy"),
        axis=alt.Axis(format="%") if metric == "accuracy" else alt.Axis(),
    )


def epoch_curves(rows: list[dict], metric: str, title: str, phase2_start: int | None = None) -> alt.Chart:
    """Train vs validation ``metric`` per epoch (``loss`` or ``accuracy``), with a rule where phase 2 starts."""
    df = pd.DataFrame(rows)
    data = []
    for name, col in (("train", metric), ("validation", f"val_{metric}")):
        if col in df:
            data += [{"epoch": int(e), "value": v, "set": name} for e, v in zip(df["epoch"], df[col], strict=True)]
    lines = (
        alt.Chart(pd.DataFrame(data, columns=["epoch", "value", "set"]), title=title)
        .mark_line(point=True)
        .encode(
            x=EPOCH_AXIS,
            y=metric_axis(metric),
            # Blue and orange: told apart where the curves cross, also by most colour-blind readers.
            color=alt.Color("set:N", title=None, scale=alt.Scale(domain=SETS, range=SET_COLOURS)),
            tooltip=["epoch", "set", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=240)
    )
    return lines + phase_marker("epoch", phase2_start - 0.5) if phase2_start else lines


def phase_marker(field: str, at: float) -> alt.LayerChart:
    """A dashed vertical rule labelled "phase 2" at ``at`` on the x axis ``field``."""
    df = pd.DataFrame({field: [at], "label": ["phase 2 →"]})
    rule = alt.Chart(df).mark_rule(strokeDash=[4, 4], color="gray").encode(x=f"{field}:Q")
    text = (
        alt.Chart(df)
        .mark_text(align="left", baseline="top", dx=4, dy=2, color="gray")
        .encode(x=f"{field}:Q", y=alt.value(0), text="label:N")
    )
    return rule + text


def batch_loss(rows: list[dict], phase2_start: int | None = None) -> alt.Chart:
    df = pd.DataFrame(rows, columns=["step", "epoch", "loss"])
    chart = (
        alt.Chart(df, title="Loss per batch")
        .mark_line(point=len(df) < 50)
        .encode(
            x=alt.X("step:Q", title="batch", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("loss:Q", scale=alt.Scale(zero=False)),
            tooltip=["step", "epoch", "loss"],
        )
        .properties(height=240)
    )
    later = df[df["epoch"] >= phase2_start] if phase2_start else df.iloc[0:0]
    return chart + phase_marker("step", float(later["step"].min()) - 0.5) if len(later) else chart


def lr_finder(learning_rates: list[float], losses: list[float], smoothed: list[float], suggestion: float | None):
    """Loss against learning rate on a log axis: each batch faint, the smoothed loss bold, the suggestion marked."""
    df = pd.DataFrame({"learning rate": learning_rates, "batch loss": losses, "smoothed loss": smoothed})
    # Divergence at the end can be orders of magnitude above the rest: keep the interesting part in view.
    top = float(np.nanpercentile(smoothed, 90)) if smoothed else 1.0
    scale = alt.Scale(domain=[0, max(top * 1.5, max(smoothed[:3] or [top]) * 1.2)], clamp=True)
    lo, hi = (min(learning_rates), max(learning_rates)) if learning_rates else (1e-7, 10.0)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = alt.Axis(format=".0e", values=[10.0**k for k in decades], grid=True)  # powers of ten only
    x = alt.X("learning rate:Q", scale=alt.Scale(type="log"), axis=ticks, title="learning rate")
    base = alt.Chart(df, title="Loss as the learning rate grows")
    raw = base.mark_line(opacity=0.3).encode(x=x, y=alt.Y("batch loss:Q", scale=scale, title="loss"))
    smooth = base.mark_line(strokeWidth=2.5).encode(
        x=x,
        y=alt.Y("smoothed loss:Q", scale=scale),
        tooltip=[alt.Tooltip("learning rate:Q", format=".2e"), alt.Tooltip("smoothed loss:Q", format=".4f")],
    )
    chart = raw + smooth
    if suggestion is not None:
        i = int(np.argmin(np.abs(np.log(np.asarray(learning_rates)) - np.log(suggestion))))
        mark = pd.DataFrame(
            {"learning rate": [suggestion], "loss": [smoothed[i]], "label": [f"suggested {suggestion:.2g}"]}
        )
        point = (
            alt.Chart(mark)
            .mark_point(size=140, filled=True, color="red")
            .encode(x="learning rate:Q", y=alt.Y("loss:Q", scale=scale))
        )
        label = (
            alt.Chart(mark)
            .mark_text(align="left", dx=8, dy=-8, color="red")
            .encode(x="learning rate:Q", y=alt.Y("loss:Q", scale=scale), text="label:N")
        )
        chart = chart + point + label
    return chart.properties(height=280)


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


def confusion_matrix(
    confusion: list[list[int]], classes: list[str], shown: list[str], normalized: bool = False, labels: bool = True
) -> alt.LayerChart:
    """Heat map of true class (rows) against predicted class (columns) for the ``shown`` classes, in that order.

    Colour is the count, or with ``normalized`` the share of the true class's images (of all of them, also those
    predicted as a class not shown). ``labels`` writes the value in each cell: only readable for a few classes.
    """
    pos = {c: i for i, c in enumerate(classes)}
    rows = [sum(r) for r in confusion]
    df = pd.DataFrame(
        [
            {
                "true": t,
                "predicted": q,
                "count": (n := confusion[pos[t]][pos[q]]),
                "share": n / rows[pos[t]] if rows[pos[t]] else 0.0,
            }
            for t in shown
            for q in shown
        ],
        columns=["true", "predicted", "count", "share"],
    )
    value = "share" if normalized else "count"
    top = max(float(df[value].max()), 1e-9) if len(df) else 1.0
    n = len(shown)
    # About 750 px square at most: beyond ~60 classes the labels thin out and the tooltips name every cell.
    step = 64 if n <= 5 else 44 if n <= 10 else 30 if n <= 20 else max(5, min(22, 750 // n))
    font = 12 if n <= 20 else min(11, step)
    axis = {"labelLimit": 180, "labelFontSize": font, "labelOverlap": "greedy" if step < 9 else False}
    base = alt.Chart(df).encode(
        x=alt.X(
            "predicted:N",
            sort=shown,
            title="predicted class",
            axis=alt.Axis(orient="top", labelAngle=-45 if n <= 20 else -90, **axis),
        ),
        y=alt.Y("true:N", sort=shown, title="true class", axis=alt.Axis(**axis)),
    )
    cells = base.mark_rect(stroke="white", strokeWidth=0.5 if n > 40 else 1).encode(
        # Empty cells stay grey rather than the palette's palest blue: in a large matrix the few errors stand out.
        color=alt.condition(
            "datum.count == 0",
            alt.value("#f0f2f6"),
            alt.Color(
                f"{value}:Q",
                title="share of the true class" if normalized else "images",
                scale=alt.Scale(scheme="blues", domain=[0, 1] if normalized else [0, top]),
                legend=alt.Legend(format=".0%" if normalized else "d"),
            ),
        ),
        tooltip=[
            alt.Tooltip("true:N", title="true"),
            alt.Tooltip("predicted:N", title="predicted"),
            alt.Tooltip("count:Q", title="images"),
            alt.Tooltip("share:Q", title="share of the true class", format=".1%"),
        ],
    )
    chart = cells
    if labels:
        text = base.mark_text(fontSize=12 if n <= 10 else 10).encode(
            text=alt.Text(f"{value}:Q", format=".0%" if normalized else "d"),
            color=alt.condition(
                alt.datum[value] > (0.5 if normalized else top / 2), alt.value("white"), alt.value("black")
            ),
        )
        chart = cells + text
    return chart.properties(width={"step": step}, height={"step": step})


def run_curves(rows: list[dict], metric: str, title: str, runs: list[str], train: bool = False) -> alt.Chart:
    """Validation ``metric`` per epoch, one colour per run, from ``core.evaluate.compare`` history rows.

    ``runs`` fixes each run's colour, so several charts of the same runs agree; ``train`` adds dashed training curves.
    """
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run", "epoch", "metric", "value"])
    sets = {f"val_{metric}": "validation", **({metric: "train"} if train else {})}
    df = df[df["metric"].isin(list(sets))].assign(set=lambda d: d["metric"].map(sets))
    tooltip = ["run", "set", "epoch", *(["phase"] if "phase" in df else []), alt.Tooltip("value:Q", format=".4f")]
    return (
        alt.Chart(df, title=title)
        .mark_line(point=True)
        .encode(
            x=EPOCH_AXIS,
            y=metric_axis(metric),
            # tableau10: neighbouring runs get clearly different hues (the theme's palette pairs two blues).
            color=alt.Color(
                "run:N",
                scale=alt.Scale(domain=runs, scheme="tableau10"),
                legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=0),
            ),
            # No legend for the dashes: beside the run legend it gets cut off; the page's toggle says "dashed".
            strokeDash=alt.StrokeDash("set:N", sort=["validation", "train"], legend=None),
            tooltip=tooltip,
        )
        .properties(height=380)  # the legend below the plot counts in the height
    )


def reliability(before: list[dict], after: list[dict] | None = None) -> alt.LayerChart:
    """Reliability diagram: each confidence bin's accuracy against its mean confidence, with the diagonal a
    perfectly calibrated model would follow; before and after calibration side by side when both are given."""
    sets = [("before calibration", before)] + ([("after calibration", after)] if after else [])
    df = pd.DataFrame(
        [
            {"model": name, "confidence": (b["low"] + b["high"]) / 2, "low": b["low"], "high": b["high"],
             "accuracy": b["accuracy"], "mean confidence": b["confidence"], "images": b["count"]}
            for name, bins in sets
            for b in bins
            if b["count"]
        ]
    )  # fmt: skip
    percent = alt.Axis(format="%")
    bars = (
        alt.Chart(df)
        .mark_bar(opacity=0.55, binSpacing=1)
        .encode(
            x=alt.X("low:Q", title="confidence", scale=alt.Scale(domain=[0, 1]), axis=percent),
            x2="high:Q",
            y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1]), axis=percent),
            y2=alt.datum(0),
            color=alt.Color("model:N", title=None, sort=[s[0] for s in sets], legend=alt.Legend(orient="bottom")),
            tooltip=[
                "model",
                alt.Tooltip("mean confidence:Q", format=".1%"),
                alt.Tooltip("accuracy:Q", format=".1%"),
                "images",
            ],
        )
    )
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(color="gray", strokeDash=[4, 4])
        .encode(x="x:Q", y="y:Q")
    )
    return (bars + diagonal).properties(height=260)


def coverage(curve: list[dict], threshold: float | None) -> alt.LayerChart:
    """Accuracy of the answered images against the share answered, with the threshold in force marked."""
    df = pd.DataFrame(curve)
    percent = alt.Axis(format="%")
    line = (
        alt.Chart(df)
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=alt.X("coverage:Q", title="images answered", scale=alt.Scale(domain=[0, 1]), axis=percent),
            y=alt.Y("accuracy:Q", title="accuracy of the answers", scale=alt.Scale(zero=False), axis=percent),
            tooltip=[
                alt.Tooltip("threshold:Q", format=".1%", title="confidence at least"),
                alt.Tooltip("coverage:Q", format=".1%", title="answered"),
                alt.Tooltip("accuracy:Q", format=".1%", title="right"),
            ],
        )
    )
    if threshold is None or df.empty:
        return line.properties(height=260)
    at = df[df["threshold"] >= threshold].tail(1)
    if at.empty:
        at = pd.DataFrame([{"coverage": 0.0, "accuracy": float(df["accuracy"].iloc[0]), "threshold": threshold}])
    point = alt.Chart(at).mark_point(size=140, filled=True, color="#d62728").encode(x="coverage:Q", y="accuracy:Q")
    return (line + point).properties(height=260)


def score_histogram(scores: dict[str, list[float]], threshold: float, bins: int = 30) -> alt.LayerChart:
    """Histograms of "none of these" scores on a log axis, one colour per source (``{label: scores}``, the
    in-distribution ones first), each as its share of its own images so that sources of any size compare; the
    threshold is a dashed rule, above which the answer is "none of these"."""
    floor = max(threshold * 1e-3, 1e-9)  # a score of 0 (an image on a class mean) still has a place on a log axis
    values = {name: np.maximum(np.asarray(v, dtype=np.float64), floor) for name, v in scores.items() if len(v)}
    everything = np.concatenate([*values.values(), [max(threshold, floor)]])
    edges = np.geomspace(everything.min(), everything.max() * 1.000001, bins + 1)
    rows = []
    for name, v in values.items():
        counts, _ = np.histogram(v, edges)
        rows += [{"source": name, "low": lo, "high": hi, "share": n / len(v), "images": int(n)}
                 for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True) if n]  # fmt: skip
    df = pd.DataFrame(rows, columns=["source", "low", "high", "share", "images"])
    x = alt.X("low:Q", title="“none of these” score (log scale)", scale=alt.Scale(type="log"),
              axis=alt.Axis(format="~s", labelOverlap=True))  # fmt: skip
    bars = (
        alt.Chart(df)
        .mark_bar(opacity=0.6, binSpacing=0)
        .encode(
            x=x,
            x2="high:Q",
            y=alt.Y("share:Q", title="share of the source's images", axis=alt.Axis(format="%"), stack=None),
            y2=alt.datum(0),
            color=alt.Color("source:N", title=None, sort=list(values), legend=alt.Legend(orient="bottom",
                            direction="vertical", labelLimit=0)),
            tooltip=["source", alt.Tooltip("low:Q", format=".4g", title="from"),
                     alt.Tooltip("high:Q", format=".4g", title="to"), "images",
                     alt.Tooltip("share:Q", format=".1%")],
        )
    )  # fmt: skip
    at = alt.Chart(pd.DataFrame({"low": [threshold], "label": ["none of these →"]}))
    rule = at.mark_rule(strokeDash=[4, 4], color="gray").encode(x="low:Q")
    text = at.mark_text(align="left", baseline="top", dx=4, dy=2, color="gray").encode(
        x="low:Q", y=alt.value(0), text="label:N"
    )
    return (bars + rule + text).properties(height=280)


def bakeoff(rows: list[dict], recommended: str | None = None) -> alt.LayerChart:
    """The bake-off's backbones as points: validation accuracy against the float32 model's size on a log axis, each
    named beside its point, the recommended one marked; the tooltip adds latency, parameters and int8 accuracy."""
    df = pd.DataFrame(
        [{"backbone": r["backbone"], "accuracy": r["val_accuracy"], "size": r["size_mb"], "latency": r["latency_ms"],
          "params": r["params"], "int8": r.get("int8_accuracy"),
          "pick": "recommended" if r["backbone"] == recommended else "compared"}
         for r in rows if r.get("val_accuracy") is not None],
        columns=["backbone", "accuracy", "size", "latency", "params", "int8", "pick"],
    )  # fmt: skip
    x = alt.X("size:Q", title="model size (MB, float32, log scale)", scale=alt.Scale(type="log", nice=False))
    y = alt.Y("accuracy:Q", title="validation accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False))
    tooltip = [
        "backbone", alt.Tooltip("accuracy:Q", title="validation accuracy", format=".1%"),
        alt.Tooltip("size:Q", title="size (MB)", format=",.1f"), alt.Tooltip("latency:Q", title="latency (ms, 1 image)",
        format=",.1f"), alt.Tooltip("params:Q", title="parameters", format=","),
        *([alt.Tooltip("int8:Q", title="int8 accuracy", format=".1%")] if df["int8"].notna().any() else []),
    ]  # fmt: skip
    base = alt.Chart(df, title="Validation accuracy against model size")
    points = base.mark_point(filled=True, size=110).encode(
        x=x, y=y, tooltip=tooltip,
        color=alt.Color("pick:N", title=None, scale=alt.Scale(domain=["recommended", "compared"],
                                                              range=["#2ca02c", "#1f77b4"])),
    )  # fmt: skip
    names = base.mark_text(align="left", dx=9, dy=-6).encode(x=x, y=y, text="backbone:N", tooltip=tooltip)
    return (points + names).properties(height=300)
