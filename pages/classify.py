"""Classify: pick a saved model, drop images (or take a photo), see the ranked classes and where the model looked."""

import pandas as pd
import streamlit as st

from core.model import calibration
from core.util.errors import UserError
from core.workspace.runs import run_infos
from ui import charts, session
from ui.review_inputs import keep_for_review, keep_toggle

IMAGE_TYPES = None  # accept any file: a non-image gets its own message, the others still classify
MAX_IMAGE_MB = 50  # per photo; the 1 GB server limit is for dataset zips
MAX_FILES = 50  # images classified per page run: each one is decoded, classified and drawn in the server
# Widget keys, one per image (its position and name appended)
GRADCAM = "gradcam"
GRADCAM_CLASS = "gradcam_class"
GRADCAM_LAYER = "gradcam_layer"


@st.cache_data(show_spinner="Computing the heat map…", max_entries=256)
def gradcam_overlay(path: str, saved: str, data: bytes, class_name: str, layer: str):
    """(overlay, whether the map is empty): Grad-CAM of ``class_name`` once per run, image, class and layer."""
    from core.evaluate.explain import explain
    from core.model.predict import load_run

    e = explain(load_run(path), data, class_name, layer=layer)
    return e.overlay, not e.heatmap.any()


def _below(p) -> str:
    """Why an answer is "none of these" or "not sure", or "" when it is neither."""
    if p.ok and p.none_of_these:
        return "Unlike every class this model was trained on"
    if not p.ok or p.sure:
        return ""
    return f"Below this model's {p.threshold:.0%} threshold, under which its answers are not trusted"


session.page()
st.title("Classify")
runs = run_infos()
if not runs:
    st.info("No saved model yet: train one first.", icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

run_info = session.run_picker(runs)
from core.model.predict import load_run  # noqa: E402  (a model must answer on this page: TensorFlow loads here)

try:
    with st.spinner("Loading the model…"):
        run = load_run(run_info.path)  # core keeps a few loaded models, shared by every session
except UserError as exc:
    session.error(exc, icon=":material/error:")
    st.stop()

if (trust := calibration.load(run_info.path)) and trust.threshold is not None:
    st.caption(
        f"This model answers “not sure” below {trust.threshold:.0%} confidence: on its {trust.split} images it "
        f"answered {trust.coverage or 0:.0%}, {trust.accepted_accuracy or 0:.0%} of those right. "
        "The threshold can be moved on the Evaluate page."
    )
if run.ood is not None:  # core.model.ood: the run learnt what its classes' images look like
    st.caption(
        f"It answers “none of these” for an image unlike every class it knows (about {run.ood.rate:.0%} of its own "
        "classes' images are taken for such by mistake)."
    )
c1, c2 = st.columns([3, 1])
files = c1.file_uploader(
    "Images to classify", type=IMAGE_TYPES, accept_multiple_files=True, max_upload_size=MAX_IMAGE_MB
)
top_k = c2.slider("Top classes to show", 1, max(1, min(10, len(run.classes))), min(3, len(run.classes)))
photo = st.camera_input("Or take a photo") if c2.toggle("Use the camera") else None
with c2:
    keep = keep_toggle(run_info, "classify")

files = files or []
if len(files) > MAX_FILES:
    st.warning(
        f"You dropped {len(files)} images: this page classifies the first {MAX_FILES} at a time. For a whole folder, "
        "use `python -m core predict RUN IMAGES… --json` on the server.",
        icon=":material/filter_list:",
    )
inputs = [(f.name, f.getvalue()) for f in files[:MAX_FILES]]
if photo is not None:
    inputs.append(("camera photo", photo.getvalue()))
if not inputs:
    st.info(f"Drop one or more images. This model knows: {', '.join(run.classes)}.", icon=":material/image:")
    st.stop()

from core.evaluate.explain import convolution_layers, default_layer  # noqa: E402  (TensorFlow is already loaded too)
from core.model.predict import predict  # noqa: E402  (TensorFlow is already loaded with the model)

with st.spinner(f"Classifying {session.plural(len(inputs), 'image')}…"):
    results = predict(run, [data for _, data in inputs], top_k=top_k, names=[name for name, _ in inputs])
if keep:  # opted in: the images and the answers go to the review queue of the model's dataset
    keep_for_review(run_info, [(name, data, p) for (name, data), p in zip(inputs, results, strict=True)], "classify",
                    session.user())  # fmt: skip

if len(results) > 1:
    table = pd.DataFrame(
        [
            {"file": p.name, "answer": p.answer, "top class": p.top[0][0] if p.ok else "",
             "probability": p.top[0][1] if p.ok else None, "note": p.error or _below(p)}
            for p in results
        ]
    )  # fmt: skip
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "probability": st.column_config.ProgressColumn("probability", format="percent", min_value=0, max_value=1)
    })  # fmt: skip
    st.download_button(
        "Download as CSV", table.to_csv(index=False).encode(), "predictions.csv", "text/csv",
        icon=":material/download:",
    )  # fmt: skip

layers, first_layer = convolution_layers(run), default_layer(run)
cams = any(st.session_state.get(f"{GRADCAM}_{i}_{name}") for i, (name, _) in enumerate(inputs))
if cams and run.config.weights == "none" and first_layer != layers[-1]:  # said once, above every image
    st.caption(
        "This model started from random weights: after a short training the last convolution block has learnt "
        f"little of its own, so its Grad-CAM maps say little. The maps come from {first_layer} by default, earlier "
        "and finer; pick another layer to compare."
    )
for i, ((name, data), p) in enumerate(zip(inputs, results, strict=True)):
    left, right = st.columns([1, 2])
    if not p.ok:
        left.error(f"**{session.escape(name)}**: {session.escape(p.error)}", icon=":material/broken_image:")
        continue
    left.image(data, caption=name, width="stretch")
    if p.none_of_these:
        right.markdown(f"**None of these** · closest {session.escape(p.top[0][0])} at {p.top[0][1]:.1%}")
        right.caption(
            f"{_below(p)}: its score {p.score:,.0f} is above the {p.score_threshold:,.0f} that the model's own "
            "images stay under. The closest classes:"
        )
    elif p.sure:
        right.markdown(f"**{session.escape(p.top[0][0])}** · {p.top[0][1]:.1%}")
    else:
        right.markdown(f"**Not sure** · best guess {session.escape(p.top[0][0])} at {p.top[0][1]:.1%}")
        right.caption(f"{_below(p)}. The best guesses:")
    right.altair_chart(charts.top_k(p.top), width="stretch")
    if not right.toggle("Show where the model looked (Grad-CAM)", key=f"{GRADCAM}_{i}_{name}"):
        continue
    c1, c2 = right.columns(2)
    explained = c1.selectbox(
        "Class to explain", run.classes, index=run.classes.index(p.top[0][0]), key=f"{GRADCAM_CLASS}_{i}_{name}",
        help="The heat map shows the parts of the image that speak for this class; the top class by default.",
    )  # fmt: skip
    layer = c2.selectbox(
        "Layer", layers, index=layers.index(first_layer), key=f"{GRADCAM_LAYER}_{i}_{name}",
        help="The convolution whose output the map is made from: later layers see larger parts, earlier ones "
        "finer detail.",
    )  # fmt: skip
    try:
        heat, empty = gradcam_overlay(str(run_info.path), run_info.finished, data, explained, layer)
    except UserError as exc:
        right.error(str(exc), icon=":material/error:")
    else:
        size = run.config.image_size
        left.image(heat, caption=f"Grad-CAM of {explained} · {layer} ({size}×{size} px, as the model saw it)",
                   width="stretch")  # fmt: skip
        if empty:
            right.caption(f"Nothing in this image speaks for {explained} at {layer}: the map is empty.")
