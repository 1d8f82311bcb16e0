"""The Train form, made from ``TrainConfig``'s field metadata: label, help, choices, bounds, step, section, when.

    config = train_form(dataset)      # draws the form, returns the TrainConfig it describes
    load_config(run.config, dataset_id)   # "train again": the form holds a run's settings

The form as the user left it is kept in the workspace database per dataset (and per user when signed in): a
reload, a new tab or a server restart draws it again exactly so.

A widget never gets a default argument: its first value goes into the session first, so a preset or a button
("Use 1e-4 as the learning rate") may set it later without Streamlit's warning. Adding an option to TrainConfig
adds its widget here, with the bounds that ``validate`` checks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.config import DEFAULT_LR, HEAD_LAYERS, IMBALANCED, VGG_FC_SIZE, TrainConfig, min_fine_tune_unfreeze
from core.data.dataset import Dataset
from core.model import backbones
from core.model.vgg16 import layer_table, unfrozen_mask
from core.workspace import forms
from core.workspace.decisions import excluded
from ui import session
from ui.session import FORM_PREFIX, WEIGHTS_FILE, session_dir

FIELDS = {f.name: f for f in TrainConfig.describe()}
WEIGHT_LABELS = {"imagenet": "ImageNet (downloaded once)", "none": "Random (no download)", "file": "Weights file (.h5)"}
TWO_PHASE = f"{FORM_PREFIX}two_phase"
FIRST_FINE_TUNE_EPOCHS = 10
# What trains well from random weights: every layer, small images, Adam with a small step.
RANDOM_PRESET = {"head": "gap", "image_size": 64, "optimizer": "adam", "learning_rate_adam": 1e-4, "batch_size": 16}


def key(name: str) -> str:
    """Widget key of a TrainConfig field (the learning rate has one per optimizer)."""
    return f"{FORM_PREFIX}{name}"


def widget(container, name: str, state_key: str | None = None, default: Any = None, **changes: Any) -> Any:
    """The widget of field ``name`` as its metadata describes it; ``changes`` override single arguments."""
    f = FIELDS[name]
    m = f.metadata
    k = state_key or key(name)
    st.session_state.setdefault(k, f.default if default is None else default)
    # persist_state="session": the value outlives a run that does not draw the widget (another page, a job view).
    args = {
        "label": m["label"],
        "key": k,
        "help": m["help"][0].upper() + m["help"][1:] + ".",
        "persist_state": "session",
        # Saved as the change arrives, before the page draws again: a reload right after typing keeps the value.
        "on_change": _remember_now,
    }
    kind = changes.pop("kind", m["widget"])
    if kind in ("select", "radio"):
        args["options"] = m["choices"]
    elif kind in ("slider", "number"):
        args |= {"min_value": m["min"], "max_value": m["max"]}
        if m["step"] is not None:
            args["step"] = m["step"]
        if m["format"]:
            args["format"] = m["format"]
    args |= changes
    if kind in ("slider", "number"):  # a value kept from other settings (another head) may be out of range now
        low, high, value = args["min_value"], args["max_value"], st.session_state[k]
        inside = min(max(value, low if low is not None else value), high if high is not None else value)
        if inside != value:
            st.session_state[k] = inside
    draw = {"select": container.selectbox, "radio": container.radio, "checkbox": container.checkbox,
            "slider": container.slider, "number": container.number_input}[kind]  # fmt: skip
    value = draw(**args)
    return type(f.default)(value) if value is not None else f.default


def random_weights_preset(num_classes: int) -> None:
    for name, value in RANDOM_PRESET.items():
        st.session_state[key(name)] = value
    st.session_state[key("unfreeze")] = len(
        layer_table(RANDOM_PRESET["head"], RANDOM_PRESET["image_size"], num_classes)
    )


def preset_applied() -> bool:
    return all(st.session_state.get(key(n)) == v for n, v in RANDOM_PRESET.items())


def two_phase_defaults(head: str) -> None:
    """Turning two-phase on: phase 2 unfreezes at least the last convolution block (the Keras guide's idea)."""
    if st.session_state.get(TWO_PHASE):
        st.session_state[key("unfreeze")] = max(st.session_state[key("unfreeze")], min_fine_tune_unfreeze(head) + 2)
        st.session_state[key("unfreeze_blocks")] = max(st.session_state.get(key("unfreeze_blocks"), 0), 1)


def weights_section(column, backbone: str = "vgg16") -> str:
    """The weights choice: 'imagenet', 'none', or the path of an uploaded .h5 file ('' until one is uploaded)."""
    kind = widget(
        column, "weights", kind="radio", options=list(WEIGHT_LABELS), format_func=WEIGHT_LABELS.get, default="imagenet"
    )
    if kind != "file":
        return kind
    upload = column.file_uploader(f"{backbones.get(backbone).title} weights (.h5)", type=["h5"], key="weights_upload")
    if upload is not None:
        target = session_dir() / "weights" / upload.name.replace("/", "_")
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(upload.getbuffer())
        st.session_state[WEIGHTS_FILE] = str(target)
    return st.session_state.get(WEIGHTS_FILE) or ""


def random_weights_box(num_classes: int) -> None:
    if preset_applied():
        st.caption(
            "Settings for random weights in use: every layer trains, on 64 px images. Expect lower accuracy than "
            "from ImageNet weights: the network learns what edges and textures are from your images alone."
        )
        return
    with st.container(border=True):
        st.markdown(
            "**Random weights know nothing about images yet.** Frozen, as in the tutorial's recipe, they leave the "
            "head little to learn from: train every layer instead, on small images so it stays quick. Expect "
            "lower accuracy than from ImageNet weights, most of all on real photos with few images per class."
        )
        st.button(
            "Use settings for random weights", icon=":material/tune:", on_click=random_weights_preset,
            args=(num_classes,), help=f"Head gap, {RANDOM_PRESET['image_size']} px, every layer unfrozen, Adam at "
            f"{RANDOM_PRESET['learning_rate_adam']:g}, batch {RANDOM_PRESET['batch_size']}.",
        )  # fmt: skip


def backbone_choice() -> str:
    """The first choice of the form: the network the classifier stands on."""
    return widget(
        st, "backbone", format_func=lambda n: f"{backbones.get(n).title} — {backbones.get(n).about}",
        help="VGG16 is the tutorial's. The smaller ones answer many times faster and fit a phone; the bake-off "
        "below trains a head on each with your images and tells you what each costs and gives.",
    )  # fmt: skip


def blocks_section(ds: Dataset, backbone: str, values: dict[str, Any]) -> dict[str, Any]:
    """Backbones other than VGG16 unfreeze in whole blocks; the table shows which train."""
    count = backbones.block_count(backbone)
    blocks = values["unfreeze_blocks"] = widget(st, "unfreeze_blocks", max_value=count)
    rows = backbones.block_table(backbone)
    trains = set(backbones.unfrozen_blocks(backbone, blocks))
    table = pd.DataFrame(rows).assign(trainable=[r["block"] in trains for r in rows])
    trainable = int(table.loc[table.trainable, "params"].sum())
    m1, m2 = st.columns(2)
    m1.metric("Trainable parameters (backbone)", f"{trainable:,}",
              help="The head's parameters train as well; batch normalisation stays frozen.")  # fmt: skip
    m2.metric("Frozen parameters", f"{int(table['params'].sum()) - trainable:,}")
    with st.expander("Blocks"):
        st.dataframe(table, hide_index=True, width="stretch")
    values["unfrozen_layers"] = [r["block"] for r in rows if r["block"] in trains]
    return values


def model_section(ds: Dataset) -> dict[str, Any]:
    st.subheader("Model")
    backbone = backbone_choice()
    c1, c2, c3 = st.columns(3)
    values = {"backbone": backbone, "weights": weights_section(c1, backbone)}
    vgg = backbone == "vgg16"
    heads = None if vgg else [h for h in FIELDS["head"].metadata["choices"] if h != "vgg-fc"]
    if not vgg and st.session_state.get(key("head")) == "vgg-fc":
        st.session_state[key("head")] = "gap"  # VGG16's own fc layers exist on VGG16 only
    head = values["head"] = widget(c2, "head", **({"options": heads} if heads else {}))
    values["resize"] = widget(c3, "resize", horizontal=True)
    if head == "vgg-fc":
        values["image_size"] = VGG_FC_SIZE
        c3.caption(f"Image size {VGG_FC_SIZE} px (the vgg-fc head needs it)")
    else:
        values["image_size"] = widget(c3, "image_size")
    if values["weights"] == "none" and vgg:
        random_weights_box(len(ds.classes))
    if not vgg:
        return blocks_section(ds, backbone, values)
    rows = layer_table(head, values["image_size"], len(ds.classes))
    two_phase = st.toggle(
        "Two-phase fine-tuning: train the new head first, then unfreeze the last K layers at a lower learning rate",
        key=TWO_PHASE, on_change=two_phase_defaults, args=(head,), persist_state="session",
        help="The Keras transfer-learning guide's recipe. Phase 1 trains only the layers the head adds, with every "
        "VGG16 layer frozen, so the random new layers cannot wreck the pretrained features; phase 2 unfreezes the "
        "last K layers and continues at a 10-100x lower learning rate.",
    )  # fmt: skip
    unfreeze = values["unfreeze"] = widget(st, "unfreeze", max_value=len(rows))
    if two_phase:
        st.caption(
            f"Phase 1 trains the {head} head's {HEAD_LAYERS[head]} layers alone; phase 2 trains the last {unfreeze} "
            f"layers (at least {min_fine_tune_unfreeze(head)}, so that it reaches into VGG16)."
        )
    mask = unfrozen_mask(len(rows), unfreeze)
    table = pd.DataFrame(rows).assign(trainable=[m and r["params"] > 0 for m, r in zip(mask, rows, strict=True)])
    trainable = int(table.loc[table.trainable, "params"].sum())
    m1, m2 = st.columns(2)
    m1.metric("Trainable parameters", f"{trainable:,}")
    m2.metric("Frozen parameters", f"{int(table['params'].sum()) - trainable:,}")
    with st.expander("Layers"):
        st.dataframe(table, hide_index=True, width="stretch")
    values["unfrozen_layers"] = [r["name"] for r, m in zip(rows, mask, strict=True) if m]
    return values


def optimizer_section() -> dict[str, Any]:
    st.subheader("Optimizer")
    o1, o2, o3 = st.columns(3)
    opt = widget(o1, "optimizer")
    values = {"optimizer": opt}
    values["learning_rate"] = widget(o2, "learning_rate", key(f"learning_rate_{opt}"), DEFAULT_LR[opt])
    probe = TrainConfig(optimizer=opt)
    for name in ("momentum", "nesterov", "weight_decay"):
        if probe.applies(name):
            values[name] = widget(o3, name)
    return values


def training_section(ds: Dataset, two_phase: bool, learning_rate: float) -> dict[str, Any]:
    st.subheader("Training")
    t1, t2, t3 = st.columns(3)
    values = {"epochs": widget(t1, "epochs", label="Epochs (phase 1)" if two_phase else "Epochs")}
    values["batch_size"] = widget(t2, "batch_size")
    has_val = any(it.split == "val" for it in ds.items)
    values["validation_split"] = widget(t3, "validation_split", disabled=has_val)
    if has_val:
        t3.caption("The dataset has its own val/ folder, which is used as the validation set.")
    w1, w2 = st.columns([1, 2])
    values["class_weight"] = widget(w1, "class_weight")
    if values["class_weight"] == "none" and (advice := imbalance_advice(ds)):
        w2.info(advice, icon=":material/balance:")
    d1, d2 = st.columns([2, 1])
    values["drop_val_duplicates"] = widget(d1, "drop_val_duplicates")
    if values["drop_val_duplicates"]:
        values["val_duplicates_limit"] = widget(d2, "val_duplicates_limit")
    if ds.id and (left_out := excluded(ds.id)):
        st.caption(
            f"{session.plural(len(left_out), 'image')} of this dataset {'is' if len(left_out) == 1 else 'are'} "
            "excluded from training (suspected label errors, decided on the Evaluate page): the run leaves "
            "them out of training and validation and lists them in its config.json."
        )
    if two_phase:
        f1, f2 = st.columns(2)
        values["fine_tune_epochs"] = widget(f1, "fine_tune_epochs", default=FIRST_FINE_TUNE_EPOCHS, min_value=1)
        values["fine_tune_lr_divisor"] = divisor = widget(f2, "fine_tune_lr_divisor")
        f2.caption(f"Phase 2 learning rate: {learning_rate / divisor:.2g}")
    with st.expander("More options"):
        columns = st.columns(4)
        for column, name in zip(columns, ("early_stopping", "seed", "decay", "precision"), strict=True):
            values[name] = widget(column, name)
        left, _ = st.columns([1, 3])
        values["none_of_these_rate"] = widget(left, "none_of_these_rate")
    return values


def imbalance_advice(ds: Dataset) -> str | None:
    """A sentence suggesting balanced class weights when the largest class has ``IMBALANCED`` times the training
    images of the smallest; None otherwise."""
    counts = {c: sum(n for split, n in by_split.items() if split not in ("val", "test"))
              for c, by_split in ds.report.counts.items()}  # fmt: skip
    counts = {c: n for c, n in counts.items() if n}
    if len(counts) < 2:
        return None
    big, small = max(counts, key=counts.get), min(counts, key=counts.get)
    if counts[big] < IMBALANCED * counts[small]:
        return None
    return (
        f"'{big}' has {counts[big] / counts[small]:.0f}× the images of '{small}' ({counts[big]:,} against "
        f"{counts[small]:,}): with balanced class weights, training does not lean toward the big class."
    )


def augmentation_section() -> dict[str, Any]:
    st.subheader("Augmentation")
    st.caption("Random changes to the training images, new every epoch; the validation images are never changed.")
    columns = st.columns(3)
    fields = TrainConfig.describe("augmentation")
    return {f.name: widget(columns[i // 2], f.name) for i, f in enumerate(fields)}


FORM_FOR = "form_for"  # session key: the (dataset, user) whose saved form the widgets hold
FORM_SAVED = "form_saved"  # session key: the values last written, so an unchanged form is not written again


def _field_of(state_key: str):
    name = state_key.removeprefix(FORM_PREFIX)
    return FIELDS.get(name) or FIELDS.get(name.rsplit("_", 1)[0])  # learning_rate_<optimizer>


def _usable(state_key: str, value: Any) -> bool:
    """Whether a saved value still fits its widget (an option may have gone since it was saved)."""
    if state_key == TWO_PHASE:
        return isinstance(value, bool)
    f = _field_of(state_key)
    if f is None or value is None:
        return False
    if f.metadata["choices"] or state_key == key("weights"):
        return value in (f.metadata["choices"] or WEIGHT_LABELS)
    return isinstance(value, type(f.default)) or (isinstance(f.default, float) and isinstance(value, int))


def restore(dataset_id: str) -> None:
    """Put the form as it was saved for this dataset into the widgets' state, once per dataset and session."""
    marker = [dataset_id, session.user()]
    if st.session_state.get(FORM_FOR) == marker:
        return
    saved = forms.load(dataset_id, marker[1]) or {}
    for state_key, value in saved.items():
        if state_key == WEIGHTS_FILE:
            if value and Path(value).is_file():
                st.session_state[WEIGHTS_FILE] = value
        elif _usable(state_key, value):
            st.session_state[state_key] = value
    st.session_state[FORM_FOR] = marker
    st.session_state[FORM_SAVED] = saved


def remember(dataset_id: str) -> None:
    """Write the form's values for this dataset when they changed."""
    values = {k: v for k, v in st.session_state.to_dict().items() if k.startswith(FORM_PREFIX) and _plain(v)}
    if WEIGHTS_FILE in st.session_state:
        values[WEIGHTS_FILE] = st.session_state[WEIGHTS_FILE]
    if values != st.session_state.get(FORM_SAVED):
        forms.save(dataset_id, session.user(), values)
        st.session_state[FORM_SAVED] = values


def _remember_now() -> None:
    """A widget's change callback: save the form of the dataset it was restored for."""
    marker = st.session_state.get(FORM_FOR)
    if marker and marker[1] == session.user():
        remember(marker[0])


def _plain(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def load_config(config: TrainConfig, dataset_id: str) -> None:
    """Fill the form with ``config`` ("train again with these settings"); it is saved on the next draw."""
    for f in TrainConfig.describe():
        value = getattr(config, f.name)
        if f.metadata["widget"] == "none":
            continue  # not a control of the form (the excluded images: the dataset's own, decided on Evaluate)
        if f.name == "fine_tune_epochs" and not config.two_phase:
            continue  # the widget's own first value (phase 2 needs at least one epoch) stays
        state_key = key(f"learning_rate_{config.optimizer}") if f.name == "learning_rate" else key(f.name)
        if f.name == "weights" and value not in WEIGHT_LABELS:
            st.session_state[WEIGHTS_FILE], value = value, "file"
        st.session_state[state_key] = value
    st.session_state[TWO_PHASE] = config.two_phase
    st.session_state[FORM_FOR] = [dataset_id, session.user()]


def train_form(ds: Dataset) -> tuple[TrainConfig, list[str], str | None]:
    """Draw the form; return the TrainConfig it describes, the names of the layers that train, and why the run
    cannot get its weights (None when it can: the ways out are drawn under the model section)."""
    if ds.id:
        restore(ds.id)
    config, unfrozen, problem = _draw(ds)
    if ds.id:
        remember(ds.id)
    return config, unfrozen, problem


def _draw(ds: Dataset) -> tuple[TrainConfig, list[str], str | None]:
    model = model_section(ds)
    unfrozen = model.pop("unfrozen_layers")
    if problem := weights_problem(model["weights"], model["head"], model["backbone"]):
        weights_way_out(problem)
    optimizer = optimizer_section()
    training = training_section(ds, bool(st.session_state.get(TWO_PHASE)), optimizer["learning_rate"])
    augment = augmentation_section()
    values = {**model, **optimizer, **training, **augment}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in known}), unfrozen, problem


@st.cache_data(ttl=600, show_spinner="Checking that the ImageNet weights can be downloaded…")
def _imagenet_problem(head: str, backbone: str = "vgg16") -> str | None:
    return backbones.weights_problem(backbone, head)  # a network check: cached for ten minutes


def weights_problem(weights: str, head: str, backbone: str = "vgg16") -> str | None:
    """Why this run cannot get its weights, in a sentence for the page; None when it can."""
    if weights == "":
        return (
            f"Upload a {backbones.get(backbone).title} weights file (.h5) above, or choose ImageNet or random weights."
        )
    if weights == "imagenet":
        return _imagenet_problem(head, backbone)
    return None


def choose_weights(kind: str) -> None:
    st.session_state[key("weights")] = kind


def weights_way_out(problem: str) -> None:
    """The problem, and the ways out as buttons right under it."""
    session.error(problem, icon=":material/cloud_off:")
    if st.session_state.get(key("weights")) != "imagenet":
        return
    c1, c2, _ = st.columns([1, 1, 2])
    c1.button("Use random weights", icon=":material/casino:", on_click=choose_weights, args=("none",))
    c2.button("Upload a weights file", icon=":material/upload_file:", on_click=choose_weights, args=("file",))
    st.caption(
        "A VGG16 weights file (.h5) downloaded on a machine with internet access works the same as the download: "
        "the ImageNet file without the top layers for the small-fc and gap heads, the full one for vgg-fc."
    )
