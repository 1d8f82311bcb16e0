"""Train: choose what to freeze, the optimizer and the epochs; watch the run live; stop it any time.

Training runs as a background job (core.jobs), so switching pages, clicking widgets or refreshing the browser
never interrupts it; the job id in the address (``?job=...``) finds it again.
"""

import pandas as pd
import streamlit as st

from core import UserError
from core.config import (
    AUGMENT_RANGES,
    HEAD_LAYERS,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    VGG_FC_SIZE,
    TrainConfig,
    min_fine_tune_unfreeze,
)
from core.jobs import CANCELLED, COMPLETED, FAILED, FEATURES, FINISHED, QUEUED, READING, STOPPED, registry
from pages import charts
from pages.common import (
    CURRENT_JOB,
    DATASET,
    FORM_PREFIX,
    JOB_PARAM,
    RUN_PARAM,
    SESSION_ID,
    WEIGHTS_FILE,
    ProgressBar,
    duration,
    init_session,
    session_dir,
)

DEFAULTS = TrainConfig()
HELP = {f.name: f.metadata["help"] for f in TrainConfig.describe()}
CHOICES = {f.name: f.metadata["choices"] for f in TrainConfig.describe()}
DEFAULT_LR = {"sgd": 0.01, "rmsprop": 0.001, "adagrad": 0.01, "adadelta": 1.0, "adam": 0.001, "adamw": 0.001}
WEIGHT_LABELS = {"imagenet": "ImageNet (downloaded once)", "none": "Random (no download)", "file": "Weights file (.h5)"}
REFRESH_SECONDS = 1.0
PREVIEW_IMAGES = 8
LR_FINDING = "lr_finding"  # session state: the last learning-rate test's result
PREVIEW_SEED = "augment_preview_seed"


def key(name: str) -> str:
    """Widget key of a TrainConfig field."""
    return f"{FORM_PREFIX}{name}"


@st.cache_resource(show_spinner="Building VGG16 to list its layers…")
def layer_rows(head: str, image_size: int, num_classes: int) -> list[dict]:
    from core.model import layer_table

    return layer_table(head, image_size, num_classes)


def unfrozen(n_layers: int, k: int) -> list[bool]:
    from core.model import unfrozen_mask

    return unfrozen_mask(n_layers, k)


def two_phase_defaults(head: str) -> None:
    """Turning two-phase on: phase 2 unfreezes at least the last convolution block (the Keras guide's idea)."""
    if st.session_state.get(key("two_phase")):
        st.session_state[key("unfreeze")] = max(st.session_state[key("unfreeze")], min_fine_tune_unfreeze(head) + 2)


@st.cache_data(show_spinner=False, max_entries=64)
def augmented_preview(path: str, size: int, resize: str, settings: dict, seed: int) -> list:
    from core.augment import preview
    from core.images import load_image

    image = load_image(path, size, resize)
    return [image, *preview(image, TrainConfig(**settings), n=PREVIEW_IMAGES, seed=seed)]


def server_speed(image_size: int, precision: str) -> float:
    """Images per second through VGG16 here: measured by earlier runs, or now (a few seconds, once)."""
    from core.model import resolve_precision
    from core.speed import known_speed, measure_speed

    resolved = resolve_precision(precision)
    speed = known_speed(image_size, resolved)
    if speed is None:
        with st.spinner("Measuring this server's speed for the time estimate (a few seconds, once)…"):
            speed = measure_speed(image_size, resolved)
    return speed


def use_learning_rate(optimizer: str, value: float) -> None:
    st.session_state[key("optimizer")] = optimizer
    st.session_state[key(f"learning_rate_{optimizer}")] = float(f"{value:.2g}")


# What trains well from random weights: every layer, small images, Adam with a small step.
RANDOM_PRESET = {"head": "gap", "image_size": 64, "optimizer": "adam", "learning_rate_adam": 1e-4, "batch_size": 16}


def random_weights_preset(num_classes: int) -> None:
    for name, value in RANDOM_PRESET.items():
        st.session_state[key(name)] = value
    st.session_state[key("unfreeze")] = len(layer_rows("gap", RANDOM_PRESET["image_size"], num_classes))


# ---------------------------------------------------------------------------------------------- a running job


def render_job(snap: dict) -> None:
    state = snap["state"]
    if snap["path_reason"]:
        st.caption(snap["path_reason"])
    if state == QUEUED:
        ahead = registry().ahead(snap["id"])
        st.info(
            f"Waiting for the server: {ahead} training run(s) ahead of yours. It starts by itself."
            if ahead
            else "Starting…",
            icon=":material/hourglass_top:",
        )
    elif state in (READING, FEATURES):
        what = "Reading images" if state == READING else "Running the frozen layers once per image"
        st.progress(
            snap["done"] / max(snap["total"], 1),
            text=f"{what}: {snap['done']:,}/{snap['total']:,} · ETA {duration(snap['eta'])}",
        )
    elif state not in FINISHED:
        text = (
            f"Epoch {snap['epoch']}/{snap['epochs']} · batch {snap['batch']}/{snap['batches']} · "
            f"elapsed {duration(snap['elapsed'])} · ETA {duration(snap['eta'])}"
        )
        if snap["stopping"]:
            text += " · stopping after this batch…"
        st.progress(snap["done"] / max(snap["total"], 1), text=text)
    if snap["epoch_logs"]:
        left, right = st.columns(2)
        p2 = snap["phase2_start"]
        left.altair_chart(charts.epoch_curves(snap["epoch_logs"], "loss", "Loss per epoch", p2), width="stretch")
        right.altair_chart(
            charts.epoch_curves(snap["epoch_logs"], "accuracy", "Accuracy per epoch", p2), width="stretch"
        )
    if snap["batch_losses"]:
        st.altair_chart(charts.batch_loss(snap["batch_losses"], snap["phase2_start"]), width="stretch")


@st.fragment(run_every=REFRESH_SECONDS)
def live(job_id: str) -> None:
    job = registry().get(job_id)
    snap = job.snapshot()
    if snap["state"] in FINISHED:
        st.rerun()  # draw the final view once, without the timer
    render_job(snap)
    label = "Cancel" if snap["state"] == QUEUED else "Stop"
    if st.button(label, icon=":material/stop_circle:", disabled=snap["stopping"], key="stop_job"):
        registry().stop(job_id)
        st.rerun()  # scope="fragment" raises when the click arrives in a full-script run


def forget_job() -> None:
    st.query_params.pop(JOB_PARAM, None)
    st.session_state.pop(CURRENT_JOB, None)


def finished(job_id: str, snap: dict) -> None:
    render_job(snap)
    state, m = snap["state"], snap["metrics"]
    if state in (COMPLETED, STOPPED):
        if state == STOPPED:
            st.warning(
                f"Stopped after {m['epochs_completed']} full epoch(s); the model trained so far is saved.",
                icon=":material/pause_circle:",
            )
        else:
            st.success(f"Finished in {duration(m['seconds'])}; the model is saved.", icon=":material/check_circle:")
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Validation accuracy", f"{m['val_accuracy']:.1%}")
        c2.metric("Validation loss", f"{m['val_loss']:.4f}")
        c3.metric("Training accuracy", "–" if m["train_accuracy"] is None else f"{m['train_accuracy']:.1%}")
        c4.metric("Epochs", m["epochs_completed"])
        l1, l2 = st.columns(2)
        l1.page_link(
            "pages/classify.py",
            label="Classify images with this model",
            icon=":material/image_search:",
            query_params={RUN_PARAM: job_id},
        )
        l2.page_link(
            "pages/evaluate.py",
            label="Evaluate it: confusion matrix and mistakes",
            icon=":material/fact_check:",
            query_params={RUN_PARAM: job_id},
        )
    elif state == FAILED:
        st.error(snap["error"], icon=":material/error:")
    elif state == CANCELLED:
        st.info("Cancelled before it started.")
    if st.button("Train another model", icon=":material/add:"):
        forget_job()
        st.rerun()


init_session()
st.title("Train")

# The address finds the job after a refresh or in a new tab; the session finds it after a visit to another page.
job_id = st.query_params.get(JOB_PARAM) or st.session_state.get(CURRENT_JOB)
if job_id:
    st.query_params[JOB_PARAM] = job_id
if job_id:
    job = registry().get(job_id)
    if job is None:
        st.info("That training run is not running on this server any more; finished runs are on the Runs page.")
        st.page_link("pages/runs.py", label="Open Runs", icon=":material/history:")
        if st.button("Train another model", icon=":material/add:"):
            forget_job()
            st.rerun()
        st.stop()
    st.caption(f"Run `{job_id}` on **{job.dataset.report.source}**")
    snap = job.snapshot()
    if snap["state"] in FINISHED:
        finished(job_id, snap)
    else:
        live(job_id)
    st.stop()

ds = st.session_state.get(DATASET)
if ds is None:
    st.info("First choose a dataset: upload a zip or take the sample.", icon=":material/info:")
    st.page_link("pages/dataset.py", label="Go to Dataset", icon=":material/folder_zip:")
    st.stop()

# Widgets that a preset can change take their first value from the session, not from a default argument:
# Streamlit refuses a widget that has both.
for name, value in {
    "image_size": DEFAULTS.image_size,
    "unfreeze": DEFAULTS.unfreeze,
    "batch_size": DEFAULTS.batch_size,
    "fine_tune_epochs": 10,
    **{f"learning_rate_{opt}": lr for opt, lr in DEFAULT_LR.items()},
}.items():
    st.session_state.setdefault(key(name), value)

st.caption(f"Dataset **{ds.report.source}**: {len(ds.classes)} classes, {ds.report.total:,} images")

# ---- Model
st.subheader("Model")
c1, c2, c3 = st.columns(3)
weights_kind = c1.radio(
    "Weights",
    list(WEIGHT_LABELS),
    format_func=WEIGHT_LABELS.get,
    key=key("weights"),
    help=HELP["weights"],
)
head = c2.selectbox("Head", CHOICES["head"], key=key("head"), help=HELP["head"])
resize = c3.radio("Resize", CHOICES["resize"], key=key("resize"), help=HELP["resize"], horizontal=True)
if head == "vgg-fc":
    image_size = VGG_FC_SIZE
    c3.caption(f"Image size {VGG_FC_SIZE} px (the vgg-fc head needs it)")
else:
    image_size = c3.slider(
        "Image size (px)", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, step=16, key=key("image_size"),
        help=HELP["image_size"],
    )  # fmt: skip
weights_path = None
if weights_kind == "file":
    upload = c1.file_uploader("VGG16 weights (.h5)", type=["h5"], key="weights_upload")
    if upload is not None:
        target = session_dir() / "weights" / upload.name.replace("/", "_")
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(upload.getbuffer())
        st.session_state[WEIGHTS_FILE] = str(target)
    weights_path = st.session_state.get(WEIGHTS_FILE)

if weights_kind == "none":
    with st.container(border=True):
        st.markdown(
            "**Random weights know nothing about images yet.** Frozen, as in the tutorial's recipe, they leave the "
            "head little to learn from: train every layer instead, on small images so it stays quick."
        )
        st.button(
            "Use settings for random weights",
            icon=":material/tune:",
            on_click=random_weights_preset,
            args=(len(ds.classes),),
            help=f"Head gap, {RANDOM_PRESET['image_size']} px, every layer unfrozen, Adam at "
            f"{RANDOM_PRESET['learning_rate_adam']:g}, batch {RANDOM_PRESET['batch_size']}.",
        )

rows = layer_rows(head, image_size, len(ds.classes))
two_phase = st.toggle(
    "Two-phase fine-tuning: train the new head first, then unfreeze the last K layers at a lower learning rate",
    key=key("two_phase"),
    on_change=two_phase_defaults,
    args=(head,),
    help="The Keras transfer-learning guide's recipe. Phase 1 trains only the layers the head adds, with every "
    "VGG16 layer frozen, so the random new layers cannot wreck the pretrained features; phase 2 unfreezes the "
    "last K layers and continues at a 10-100x lower learning rate.",
)
unfreeze = st.slider(
    "Unfreeze the last K layers", 1, len(rows), key=key("unfreeze"),
    help=HELP["unfreeze"],
)  # fmt: skip
if two_phase:
    st.caption(
        f"Phase 1 trains the {head} head's {HEAD_LAYERS[head]} layers alone; phase 2 trains the last {unfreeze} "
        f"layers (at least {min_fine_tune_unfreeze(head)}, so that it reaches into VGG16)."
    )
mask = unfrozen(len(rows), unfreeze)
table = pd.DataFrame(rows).assign(trainable=[m and r["params"] > 0 for m, r in zip(mask, rows, strict=True)])
trainable = int(table.loc[table.trainable, "params"].sum())
frozen = int(table["params"].sum()) - trainable
m1, m2 = st.columns(2)
m1.metric("Trainable parameters", f"{trainable:,}")
m2.metric("Frozen parameters", f"{frozen:,}")
with st.expander("Layers", expanded=False):
    st.dataframe(table, hide_index=True, width="stretch")

# ---- Optimizer and loop
st.subheader("Optimizer")
o1, o2, o3 = st.columns(3)
optimizer = o1.selectbox("Optimizer", CHOICES["optimizer"], key=key("optimizer"), help=HELP["optimizer"])
learning_rate = o2.number_input(
    "Learning rate", min_value=1e-7, max_value=10.0, format="%g",
    key=key(f"learning_rate_{optimizer}"), help=HELP["learning_rate"],
)  # fmt: skip
momentum, nesterov, weight_decay = DEFAULTS.momentum, DEFAULTS.nesterov, DEFAULTS.weight_decay
if optimizer == "sgd":
    momentum = o3.number_input("Momentum", 0.0, 0.999, DEFAULTS.momentum, key=key("momentum"), help=HELP["momentum"])
    nesterov = o3.checkbox("Nesterov", DEFAULTS.nesterov, key=key("nesterov"), help=HELP["nesterov"])
elif optimizer == "adamw":
    weight_decay = o3.number_input(
        "Weight decay", 0.0, 1.0, DEFAULTS.weight_decay, format="%g", key=key("weight_decay"),
        help=HELP["weight_decay"],
    )  # fmt: skip

st.subheader("Training")
t1, t2, t3 = st.columns(3)
epochs = t1.number_input(
    "Epochs (phase 1)" if two_phase else "Epochs", 1, 1000, DEFAULTS.epochs, key=key("epochs"), help=HELP["epochs"]
)
batch_size = t2.number_input("Batch size", 1, 1024, key=key("batch_size"), help=HELP["batch_size"])
has_val = any(it.split == "val" for it in ds.items)
validation_split = t3.slider(
    "Validation split", 0.05, 0.5, DEFAULTS.validation_split, 0.05, key=key("validation_split"),
    help=HELP["validation_split"], disabled=has_val,
)  # fmt: skip
if has_val:
    t3.caption("The dataset has its own val/ folder, which is used as the validation set.")
fine_tune_epochs, fine_tune_lr_divisor = 0, DEFAULTS.fine_tune_lr_divisor
if two_phase:
    f1, f2 = st.columns(2)
    fine_tune_epochs = f1.number_input(
        "Epochs (phase 2)", 1, 1000, key=key("fine_tune_epochs"), help=HELP["fine_tune_epochs"]
    )
    fine_tune_lr_divisor = f2.select_slider(
        "Phase 2 learning rate: phase 1's divided by", [10, 20, 30, 50, 100], 10, key=key("fine_tune_lr_divisor"),
        help=HELP["fine_tune_lr_divisor"],
    )  # fmt: skip
    f2.caption(f"Phase 2 learning rate: {learning_rate / fine_tune_lr_divisor:.2g}")
with st.expander("More options"):
    a1, a2, a3, a4 = st.columns(4)
    early_stopping = a1.number_input(
        "Early stopping patience (0 = off)", 0, 100, DEFAULTS.early_stopping, key=key("early_stopping"),
        help=HELP["early_stopping"],
    )  # fmt: skip
    seed = a2.number_input("Seed", 0, 2**31 - 1, DEFAULTS.seed, key=key("seed"), help=HELP["seed"])
    decay = a3.number_input("LR decay", 0.0, 1.0, DEFAULTS.decay, format="%g", key=key("decay"), help=HELP["decay"])
    precision = a4.selectbox("Precision", CHOICES["precision"], key=key("precision"), help=HELP["precision"])

# ---- Augmentation
st.subheader("Augmentation")
st.caption("Random changes to the training images, new every epoch; the validation images are never changed.")
g1, g2, g3 = st.columns(3)
augment = {
    "augment_flip": g1.checkbox("Flip left-right", False, key=key("augment_flip"), help=HELP["augment_flip"]),
    "augment_rotation": g1.slider(
        "Rotation (degrees)", 0.0, AUGMENT_RANGES["augment_rotation"], 0.0, 5.0, key=key("augment_rotation"),
        help=HELP["augment_rotation"],
    ),
    "augment_zoom": g2.slider(
        "Zoom", 0.0, AUGMENT_RANGES["augment_zoom"], 0.0, 0.05, key=key("augment_zoom"), help=HELP["augment_zoom"]
    ),
    "augment_translation": g2.slider(
        "Shift", 0.0, AUGMENT_RANGES["augment_translation"], 0.0, 0.05, key=key("augment_translation"),
        help=HELP["augment_translation"],
    ),
    "augment_contrast": g3.slider(
        "Contrast", 0.0, AUGMENT_RANGES["augment_contrast"], 0.0, 0.05, key=key("augment_contrast"),
        help=HELP["augment_contrast"],
    ),
    "augment_brightness": g3.slider(
        "Brightness", 0.0, AUGMENT_RANGES["augment_brightness"], 0.0, 0.05, key=key("augment_brightness"),
        help=HELP["augment_brightness"],
    ),
}  # fmt: skip

config = TrainConfig(
    weights=(weights_path or "") if weights_kind == "file" else weights_kind,
    head=head,
    image_size=int(image_size),
    resize=resize,
    unfreeze=int(unfreeze),
    optimizer=optimizer,
    learning_rate=float(learning_rate),
    momentum=float(momentum),
    nesterov=bool(nesterov),
    decay=float(decay),
    weight_decay=float(weight_decay),
    batch_size=int(batch_size),
    epochs=int(epochs),
    validation_split=float(validation_split),
    early_stopping=int(early_stopping),
    seed=int(seed),
    precision=precision,
    fine_tune_epochs=int(fine_tune_epochs),
    fine_tune_lr_divisor=float(fine_tune_lr_divisor),
    **{name: type(getattr(DEFAULTS, name))(value) for name, value in augment.items()},
)

if config.augmented:
    train_items = [it for it in ds.items if it.split in ("", "train")]
    st.session_state.setdefault(PREVIEW_SEED, 0)
    pick = train_items[st.session_state[PREVIEW_SEED] % len(train_items)]
    settings = {f.name: getattr(config, f.name) for f in TrainConfig.describe() if f.name.startswith("augment_")}
    settings["seed"] = 0
    variants = augmented_preview(
        str(ds.root / pick.path), config.image_size, config.resize, settings, st.session_state[PREVIEW_SEED]
    )
    st.image(variants, width=96, caption=["original"] + [""] * PREVIEW_IMAGES)
    st.caption(f"{pick.path} and {PREVIEW_IMAGES} augmented versions of it, as training would see them.")
    if st.button("Another image", icon=":material/shuffle:"):
        st.session_state[PREVIEW_SEED] += 1
        st.rerun()

# ---- Time estimate: how long the run takes on this server, from the measured speed of VGG16 here.
n_val = sum(it.split == "val" for it in ds.items)
n_pool = sum(it.split in ("", "train") for it in ds.items)
if not has_val:
    n_val = round(n_pool * config.validation_split)
n_train = n_pool - (0 if has_val else n_val)
unfrozen_names = [r["name"] for r, m in zip(rows, mask, strict=True) if m]
if config.augmented:
    from core.speed import estimate, human_time

    est = estimate(config, n_train, n_val, server_speed(config.image_size, precision), unfrozen_names)
    if est.cached_seconds >= est.seconds * 0.95:
        st.info(
            f"With these layers unfrozen the run trains end to end anyway, so augmentation adds little time: "
            f"{est.text}.",
            icon=":material/schedule:",
        )
    else:
        st.warning(
            f"Augmentation changes every image every epoch, so the frozen layers' outputs cannot be computed once "
            f"and reused: the run trains end to end, {est.text}. Without augmentation: about "
            f"{human_time(est.cached_seconds)}.",
            icon=":material/schedule:",
        )

# ---- Learning-rate finder
st.subheader("Learning-rate finder")
st.caption(
    "A short test run on the training images: the learning rate grows from 1e-7 to 10, one batch per step, "
    "and the loss shows which rates learn and which diverge. It uses the feature cache when the layers before "
    "the trainable ones are frozen, so it takes seconds; it saves nothing."
)


def weights_problem() -> str | None:
    if weights_kind == "file" and not weights_path:
        return "Upload a VGG16 weights file (.h5) first, or choose ImageNet or random weights."
    if weights_kind == "imagenet":
        from core.model import imagenet_problem

        return imagenet_problem(head)
    return None


def report_weights_problem(problem: str) -> None:
    st.error(problem, icon=":material/cloud_off:")
    st.info("Choose **Random (no download)** or **Weights file (.h5)** under Weights above and start again.")


if st.button("Find a learning rate", icon=":material/query_stats:"):
    if problem := weights_problem():
        report_weights_problem(problem)
    else:
        from core.lrfind import lr_find

        bars: dict[str, ProgressBar] = {}
        labels = {"features": "Frozen layers, once per image", "reading": "Reading images", "testing": "Test run"}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = ProgressBar(labels[stage])
            bars[stage](done, total)

        try:
            finding = lr_find(ds, config, progress=progress)
        except UserError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.session_state[LR_FINDING] = {**finding.to_dict(), "image_size": config.image_size, "head": head}
        for bar in bars.values():
            bar.empty()

finding = st.session_state.get(LR_FINDING)
if finding:
    st.altair_chart(
        charts.lr_finder(finding["learning_rates"], finding["losses"], finding["smoothed"], finding["suggestion"]),
        width="stretch",
    )
    st.caption(
        f"{finding['optimizer']}, {finding['head']} head, {finding['image_size']} px: {len(finding['losses'])} "
        f"batches in {finding['seconds']:.1f} s ({finding['path']})."
    )
    if finding["suggestion"] is None:
        st.info(finding["reason"], icon=":material/info:")
    else:
        st.markdown(f"**Suggested learning rate: {finding['suggestion']:.2g}**, {finding['reason']}.")
        st.button(
            f"Use {finding['suggestion']:.2g} as the {finding['optimizer']} learning rate",
            icon=":material/input:",
            on_click=use_learning_rate,
            args=(finding["optimizer"], finding["suggestion"]),
            key="use_lr",
        )

st.divider()
if st.button("Start training", type="primary", icon=":material/play_arrow:"):
    if problem := weights_problem():
        report_weights_problem(problem)
    else:
        try:
            job = registry().submit(ds, config, owner=st.session_state[SESSION_ID])
        except UserError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.query_params[JOB_PARAM] = st.session_state[CURRENT_JOB] = job.id
            st.rerun()
