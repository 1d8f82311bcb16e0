"""Demo: one shared model for a stakeholder: its name and purpose, a photo in, one large answer, nothing else.

Opened by a Share link (``?demo=<run id>&key=<token>``, ui/share_views.py): app.py routes such an address here
alone, with no menu and no sidebar. Nothing on this page changes anything on the server, except that a visitor may
opt in to keep a photo for the model's owner to review (the link's key is the permission to classify, and so to
queue: core.workspace.review, capped per dataset). It fits a phone (one column, no wide tables).
"""

from pathlib import Path

import streamlit as st

from core.publish.card import facts, render
from core.workspace import share
from ui import charts, session
from ui.review_inputs import keep_for_review, keep_toggle
from ui.session import DEMO_PARAM, KEY_PARAM

MAX_IMAGE_MB = 50  # as on Classify
TOP_K = 3
# Widget keys and the answer's container (its CSS class st-key-demo_answer lets the browser test find it)
UPLOAD = "demo_upload"
CAMERA_ON = "demo_camera_on"
CAMERA = "demo_camera"
GRADCAM = "demo_gradcam"
ANSWER = "demo_answer"


@st.cache_data(show_spinner="Looking where the model looked…", max_entries=64)
def where_it_looked(path: str, saved: str, data: bytes, class_name: str):
    """Grad-CAM of ``class_name`` over the image, at the layer Classify starts from; once per run, image and class."""
    from core.evaluate.explain import default_layer, explain
    from core.model.predict import load_run

    run = load_run(path)
    return explain(run, data, class_name, layer=default_layer(run)).overlay


session.inside_router()
try:
    info = share.open_shared(st.query_params.get(DEMO_PARAM, ""), st.query_params.get(KEY_PARAM, ""))
except share.ShareError as exc:
    session.error(exc, icon=":material/link_off:")
    st.stop()

# A stakeholder reads what the model tells apart, not a run id: the dataset's name, the id small below it.
st.title(f"{session.escape(Path(info.dataset).stem.replace('_', ' ')) or 'Image'} classifier")
if about := facts.purpose(info.path):
    st.markdown(session.escape(about))
st.caption(
    f"It tells apart {session.plural(len(info.classes), 'class', 'classes')}: "
    f"{session.escape(', '.join(info.classes))}. Model {info.id}."
)

upload = st.file_uploader("Choose a photo", key=UPLOAD, max_upload_size=MAX_IMAGE_MB)
photo = st.camera_input("Take a photo", key=CAMERA) if st.toggle("Use the camera", key=CAMERA_ON) else None
keep = keep_toggle(info, "demo", "Keep this photo so that the model's owner can review it")
chosen = photo if photo is not None else upload
wait = share.take_answer(info.id) if chosen is not None else 0.0
if chosen is None:
    st.info("Choose a photo or take one: the model says what it sees.", icon=":material/photo_camera:")
elif wait:
    st.warning(
        f"This demo is answering many photos right now (at most {share.demo_rate()} a minute): try again in "
        f"{wait:.0f} seconds.",
        icon=":material/hourglass_top:",
    )
else:
    from core.model.predict import load_run, predict  # here only: the model must answer, TensorFlow loads now

    data = chosen.getvalue()
    with st.spinner("Looking at the photo…"):
        (p,) = predict(load_run(info.path), [data], top_k=TOP_K, names=[chosen.name])
    if keep:
        keep_for_review(info, [(chosen.name, data, p)], "demo")
    if not p.ok:
        st.error(f"**{session.escape(chosen.name)}** cannot be read ({session.escape(p.error)}): choose a photo, "
                 "a JPEG or a PNG.", icon=":material/broken_image:")  # fmt: skip
    else:
        best, confidence = p.top[0]
        with st.container(key=ANSWER):
            if p.none_of_these:
                st.markdown("## None of these")
                st.markdown(
                    f"This photo is unlike every class the model knows. The closest is **{session.escape(best)}** "
                    f"at {confidence:.0%}, but the model was not trained on anything like it."
                )
            elif p.sure:
                st.markdown(f"## {session.escape(best)}")
                st.markdown(f"**{confidence:.0%}** confident")
            else:
                st.markdown("## Not sure")
                st.markdown(
                    f"Best guess **{session.escape(best)}** at {confidence:.0%}: below this model's "
                    f"{p.threshold:.0%} threshold, under which its answers are not trusted."
                )
        st.altair_chart(charts.top_k(p.top), width="stretch")
        left, right = st.columns(2)  # side by side on a laptop, one under the other on a phone
        left.image(data, caption=chosen.name, width="stretch")
        if right.toggle(
            "Where the model looked", key=GRADCAM, help="A heat map of the parts that speak for its answer."
        ):
            right.image(
                where_it_looked(str(info.path), info.finished, data, best), width="stretch",
                caption=f"Where the model looked for {session.escape(best)} (as it saw the photo)",
            )  # fmt: skip

with st.expander("About this model"):
    st.markdown(render.markdown(info.path))
