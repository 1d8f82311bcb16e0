"""The Evaluate page's trust section: how calibrated the probabilities are, and the "not sure" threshold.

The reliability diagrams and errors come from the evaluation (``Evaluation.calibration``, computed on the images it
scored); the threshold in force is the run's (``core.model.calibration``, in calibration.json), which a user moves
here and saves for everyone who classifies with the run.
"""

from __future__ import annotations

import streamlit as st

from core.evaluate.evaluation import Evaluation
from core.model import calibration
from core.util.errors import UserError
from core.workspace.runs import RunInfo
from ui import charts, session

# Widget keys (the run id is appended)
THRESHOLD = "threshold"
ANSWER_ALL = "threshold_answer_all"


def answered(curve: list[dict], threshold: float | None) -> tuple[float, float]:
    """(share answered, accuracy of those) at ``threshold`` on a coverage curve, most sure point first."""
    if not curve:
        return 0.0, 0.0
    if threshold is None:
        return curve[-1]["coverage"], curve[-1]["accuracy"]
    at = [c for c in curve if c["threshold"] >= threshold]
    return (at[-1]["coverage"], at[-1]["accuracy"]) if at else (0.0, 0.0)


def trust_section(ev: Evaluation, run: RunInfo) -> None:
    st.subheader("Can the probabilities be trusted?")
    c = ev.calibration
    if not c:
        st.info(
            "This evaluation was made before calibration was measured: evaluate again to see it.",
            icon=":material/info:",
        )
        return
    report = calibration.load(run.path)
    _calibration_part(c, report, ev)
    _threshold_part(c, report, ev, run)


def _calibration_part(c: dict, report: calibration.Report | None, ev: Evaluation) -> None:
    calibrated = c["temperature"] != 1.0
    m1, m2, m3 = st.columns(3)
    m1.metric(
        "Calibration error (ECE)",
        f"{c['ece_after']:.1%}",
        delta=f"{c['ece_after'] - c['ece_before']:+.1%} by calibration" if calibrated else None,
        delta_color="inverse",
        help="Expected calibration error over 15 confidence bins: how far, on average, the probability the model "
        "gives is from how often it is right. 0 is perfect.",
    )
    m2.metric("Temperature", f"{c['temperature']:.2f}" if calibrated else "—",
              help="The model's logits are divided by it; above 1 the model was overconfident.")  # fmt: skip
    m3.metric(
        "Loss (NLL)",
        f"{c['nll_after']:.4f}",
        delta=f"{c['nll_after'] - c['nll_before']:+.4f}" if calibrated else None,
        delta_color="inverse",
    )
    st.altair_chart(
        charts.reliability(c["reliability_before"], c["reliability_after"] if calibrated else None), width="stretch"
    )
    where = f"{ev.images:,} {'validation' if ev.split == 'val' else ev.split} images"
    if calibrated:
        fitted = f"{report.images} {report.split} images" if report else "the validation images"
        same = " — the same images, so this is the best case" if ev.source == "val" else ""
        st.caption(
            f"On {where}: bars on the diagonal mean that of the images given 80 %, 80 % are right. The temperature was "
            f"fitted on {fitted}{same}. The saved model carries it: Classify, the command line and exports all give "
            "the calibrated probabilities."
        )
    else:
        reason = report.reason if report and report.reason else "the run was trained before calibration existed."
        st.caption(f"On {where}. Not calibrated: {reason}")


@st.fragment
def _threshold_part(c: dict, report: calibration.Report | None, ev: Evaluation, run: RunInfo) -> None:
    st.markdown("**“Not sure” threshold**")
    curve, saved = c["curve"], report.threshold if report else None
    key = f"{THRESHOLD}_{run.id}"
    left, right = st.columns([2, 3])
    answer_all = left.toggle(
        "Always answer", value=saved is None, key=f"{ANSWER_ALL}_{run.id}",
        help="Off: below the threshold, Classify and the command line answer “not sure” (with the best guesses).",
    )  # fmt: skip
    threshold = None
    if not answer_all:
        threshold = left.slider(
            "Answer only at this confidence or more", 0.0, 1.0, value=float(saved if saved is not None else 0.5),
            step=0.01, format="%.2f", key=key,
        )  # fmt: skip
    coverage, accuracy = answered(curve, threshold)
    left.markdown(calibration.in_words(threshold, coverage, accuracy, f"{ev.split}"))
    if report and report.threshold_source == "validation" and report.coverage is not None:
        chosen = (
            f"{report.threshold:.0%}, the lowest at which the answers reach {report.target:.0%} on validation"
            if report.threshold is not None
            else f"none: no threshold reaches {report.target:.0%} on validation"
        )
        left.caption(f"Chosen at training: {chosen}.")
    elif report and report.threshold_source == "user":
        left.caption(f"Saved by a user: {'none' if saved is None else f'{saved:.0%}'}.")
    changed = threshold != saved and not (threshold is not None and saved is not None and abs(threshold - saved) < 1e-9)
    if left.button("Save threshold", icon=":material/save:", disabled=not changed, key=f"save_{key}"):
        try:
            calibration.set_threshold(run.path, threshold, coverage, accuracy, user=session.user())
        except UserError as exc:
            left.error(str(exc), icon=":material/error:")
        else:
            st.toast("Threshold saved: Classify uses it from now on.", icon=":material/check:")
            st.rerun(scope="app")
    right.altair_chart(charts.coverage(curve, threshold), width="stretch")
