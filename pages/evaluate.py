"""Evaluate: how a saved model does on images it never trained on: scores, confusion matrix, worst mistakes.

The scores are computed once per run, as a job (core.evaluate.evaluation), and saved in the run folder as
evaluation.json;
the page reads that file, and starts an evaluation only for a run that has none, or when the user asks again.
"""

import streamlit as st

from core.evaluate.evaluation import load_evaluation
from core.util.errors import UserError
from core.workspace.runs import run_infos
from ui import session, tasks
from ui.duplicates_views import leak_warning
from ui.evaluate_views import (
    EVAL_JOB,
    confused_pairs_section,
    confusion_section,
    describe,
    evaluate_form,
    gallery_section,
    per_class_section,
)
from ui.label_issues_views import label_issues_section
from ui.none_of_these_views import none_of_these_section
from ui.session import CURRENT_JOB, RUN_PARAM
from ui.trust_views import trust_section

session.page()
st.title("Evaluate")
runs = run_infos()
if not runs:
    st.info("No saved model yet: train one first, then see here how it does on images it never trained on.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

# The run this session trained last, once it is saved, when the address names none.
run = session.run_picker(runs, fallback=st.session_state.get(CURRENT_JOB))
finished = tasks.follow(EVAL_JOB)
if finished is not None and finished.error:
    session.error(finished.error, icon=":material/error:")
try:
    ev = load_evaluation(run.path)
except UserError as exc:
    session.error(exc, icon=":material/error:")
    st.stop()

if ev is None:
    if st.session_state.get(EVAL_JOB) is None:
        st.info(
            "This run has not been evaluated yet. Evaluating classifies the images it never trained on, once; the "
            "scores are saved with the run for everyone.",
            icon=":material/info:",
        )
        evaluate_form(run)
        if st.session_state.get(EVAL_JOB):
            st.rerun()  # draw the job's progress
    st.stop()
if st.session_state.get(EVAL_JOB) is None:
    with st.expander("Evaluate again"):
        evaluate_form(run)
        if st.session_state.get(EVAL_JOB):
            st.rerun()

split, sentence = describe(ev)
columns = st.columns(5 if ev.top_k > 1 and ev.top_k < len(ev.classes) else 4)
columns[0].metric("Accuracy", f"{ev.accuracy:.1%}")
columns[1].metric("Loss", f"{ev.loss:.4f}")
columns[2].metric("Images", f"{ev.images:,}")
columns[3].metric("Evaluated on", split)
if len(columns) == 5:
    columns[4].metric(f"Top-{ev.top_k} accuracy", f"{ev.top_k_accuracy:.1%}")
st.caption(sentence)
for warning in ev.warnings:
    st.warning(warning, icon=":material/warning:")
leak_warning(run.path, ev.split)  # held-out images that duplicate training images

confusion_section(ev, run.id)
per_class_section(ev, run.id)
confused_pairs_section(ev, run.id)
trust_section(ev, run)
none_of_these_section(ev)
gallery_section(ev, run)
label_issues_section(run)

st.page_link("pages/classify.py", label="Classify new images with this run", icon=":material/image_search:",
             query_params={RUN_PARAM: run.id})  # fmt: skip
