"""The Evaluate page's "none of these" section: the run's threshold, its false alarms on the evaluated images, and
how well it catches images unlike every class (the dataset's ``__other__`` images, noise, flat colours, each class
held out in turn), with a histogram of their scores against the evaluated images'.

Everything comes from the evaluation (``Evaluation.none_of_these``, made by core.evaluate.none_of_these): drawing
it loads no model.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.evaluate.evaluation import Evaluation
from ui import charts, session

HISTOGRAM_TITLE = "Scores: the evaluated images against images unlike every class"
SCORE_HELP = (
    "The score is the smallest squared Mahalanobis distance of an image's features (the input of the model's last "
    "layer) to a class's mean; above the threshold the answer is “none of these”."
)
RATE_HELP = (
    "The share of the known classes' images the threshold lets be called “none of these”: the threshold is that "
    "quantile of the validation images' scores, set when training."
)


def none_of_these_section(ev: Evaluation) -> None:
    st.subheader("“None of these”: images unlike every class")
    report = ev.none_of_these
    if not report:
        st.caption("This evaluation was made before “none of these” was measured: evaluate again to see it.")
        return
    if not report.get("available"):
        st.caption(f"This run cannot answer “none of these”: {session.escape(report.get('reason', ''))}")
        return
    inside, where = report["inside"], "validation" if ev.split == "val" else ev.split
    m1, m2, m3 = st.columns(3)
    m1.metric("Threshold (score)", f"{report['threshold']:,.4g}", help=SCORE_HELP)
    m2.metric("Target false alarms", f"{report['rate']:.0%}", help=RATE_HELP)
    m3.metric(
        f"False alarms on these {where} images",
        f"{inside['flagged']:.1%}",
        help=f"{session.plural(inside['images'], 'image')} of the known classes, called “none of these”.",
    )
    sources = report.get("sources", [])
    if sources:
        table = pd.DataFrame(sources, columns=["label", "images", "flagged", "auroc"])
        st.dataframe(
            table, hide_index=True, width="stretch",
            column_config={
                "label": "images unlike every class",
                "images": st.column_config.NumberColumn("images"),
                "flagged": st.column_config.ProgressColumn("answered “none of these”", format="percent",
                                                           min_value=0.0, max_value=1.0),
                "auroc": st.column_config.NumberColumn(
                    "AUROC", format="%.3f",
                    help=f"How well the score tells these from the {where} images: 1 always, 0.5 no better than "
                    "chance (a class held out: from the other classes' validation images, by a fit without it).",
                ),
            },
        )  # fmt: skip
    scores = {f"evaluated {where} images": inside["scores"]}
    scores |= {s["label"]: s["scores"] for s in sources if s.get("scores")}
    if len(scores) > 1:
        st.markdown(f"**{HISTOGRAM_TITLE}**")
        st.altair_chart(charts.score_histogram(scores, report["threshold"]), width="stretch")
    held_out = report.get("held_out") or []
    if held_out:
        with st.expander(f"Each class held out in turn ({len(held_out)})"):
            st.caption(
                "At training, the model's features were fitted again without the class; its validation images were "
                "then scored as a kind of image the run never saw."
            )
            st.dataframe(pd.DataFrame(held_out, columns=["class", "images", "flagged", "auroc"]), hide_index=True,
                         width="stretch", column_config={
                             "flagged": st.column_config.ProgressColumn("answered “none of these”", format="percent",
                                                                        min_value=0.0, max_value=1.0),
                             "auroc": st.column_config.NumberColumn("AUROC", format="%.3f")})  # fmt: skip
    if not any(s["source"] == "other" for s in sources):
        st.caption(
            "Real examples do better than made ones: put images the model will meet but should not name in a "
            "folder named `__other__` beside the class folders of the dataset's zip, and evaluate on it."
        )
