"""The Train page's helpers around the form: the augmentation preview, the time estimate (and the speed probe it
waits for), the learning-rate finder."""

from __future__ import annotations

import streamlit as st

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.jobs import probes
from core.jobs.kinds import LR_FIND
from core.jobs.registry import registry
from core.jobs.states import COMPLETED, QUEUED, STARTING, JobSnapshot
from core.train import estimates, pace
from core.util import text
from ui import charts, session, tasks
from ui.session import guarded, plural
from ui.train_form import key

PREVIEW_IMAGES = 8
PREVIEW_SEED = "augment_preview_seed"
LR_JOB = "lr_job"  # session state: the running learning-rate test
LR_FINDING = "lr_finding"  # session state: the last learning-rate test's result
SPEED_REFRESH_SECONDS = 1.0  # the speed probe's progress is redrawn this often while it is queued or runs


@st.cache_data(show_spinner=False, max_entries=64)
def augmented_preview(path: str, size: int, resize: str, settings: dict, seed: int) -> list:
    from core.imaging.pillow import thumbnail
    from core.train.augment import preview  # Keras' preprocessing layers: only once augmentation is asked for

    image = thumbnail(path, size, resize)
    return [image, *preview(image, TrainConfig(**settings), n=PREVIEW_IMAGES, seed=seed)]


def augmentation_preview(ds: Dataset, config: TrainConfig) -> None:
    train_items = [it for it in ds.items if it.split in ("", "train")]
    st.session_state.setdefault(PREVIEW_SEED, 0)
    pick = train_items[st.session_state[PREVIEW_SEED] % len(train_items)]
    settings = {f.name: getattr(config, f.name) for f in TrainConfig.describe("augmentation")} | {"seed": 0}
    variants = augmented_preview(
        str(ds.root / pick.path), config.image_size, config.resize, settings, st.session_state[PREVIEW_SEED]
    )
    st.image(variants, width=96, caption=["original"] + [""] * PREVIEW_IMAGES)
    st.caption(f"{session.escape(pick.path)} and {PREVIEW_IMAGES} augmented versions of it, as training sees them.")
    if st.button("Another image", icon=":material/shuffle:"):
        st.session_state[PREVIEW_SEED] += 1
        st.rerun()


def split_sizes(ds: Dataset, config: TrainConfig) -> tuple[int, int]:
    """(training images, validation images) as the run will split them."""
    n_val = sum(it.split == "val" for it in ds.items)
    n_pool = sum(it.split in ("", "train") for it in ds.items)
    if n_val:
        return n_pool, n_val
    n_val = max(round(n_pool * config.validation_split), 1)
    return n_pool - n_val, n_val


def probe_text(probe: JobSnapshot) -> str:
    """The speed probe's progress in one sentence, for the place of the time estimate."""
    what = f"Measuring this server's speed at {probe.params.get('image_size')} px for a time estimate"
    if probe.state == QUEUED:
        ahead = registry().ahead(probe.id)
        return f"{what}: queued behind {plural(ahead, 'job')}." if ahead else f"{what}: starting…"
    if probe.stopping:
        return f"{what}: stopping…"
    if probe.state == STARTING or not probe.done or not probe.total:
        return f"{what}: starting…"
    left = f", about {text.human_time(probe.eta)} left" if probe.eta is not None else ""
    return f"{what}: {probe.done} of {probe.total} batches{left}."


@st.fragment(run_every=SPEED_REFRESH_SECONDS)
@guarded
def _waiting_for_speed(image_size: int, precision: str) -> None:
    probe = probes.probe(image_size, precision)
    if pace.known_speed(image_size, precision) is not None or probe is None:
        st.rerun()  # measured (the estimate replaces this), or the probe ended without an answer
    st.caption(probe_text(probe))


def time_estimate(ds: Dataset, config: TrainConfig, unfrozen: list[str]) -> None:
    """How long the run will take here, before it starts, for every kind of run."""
    if config.backbone != "vgg16":  # the time model counts VGG16's convolutions; the bake-off measures the others
        st.caption(
            f"No time estimate for {config.backbone} yet: the progress bar gives one as soon as training starts "
            "(the bake-off on this page measures every backbone's speed here)."
        )
        return
    ips = pace.known_speed(config.image_size, config.precision)
    if ips is None:
        # A job like a training (it waits for a free slot, and shows on the Jobs page): no TensorFlow here.
        if probes.measure_in_background(config.image_size, config.precision, owner=session.user()) is None:
            st.caption("No time estimate: this server's speed could not be measured at this size just now.")
        else:
            _waiting_for_speed(config.image_size, config.precision)
        return
    n_train, n_val = split_sizes(ds, config)
    est = estimates.estimate(config, n_train, n_val, ips, unfrozen)
    if config.augmented and est.cached_seconds < est.seconds * 0.95:
        st.warning(
            f"Augmentation changes every image every epoch, so the frozen layers' outputs cannot be computed once "
            f"and reused: the run trains end to end, {est.text}. Without augmentation: about "
            f"{text.human_time(est.cached_seconds)}.",
            icon=":material/schedule:",
        )
    else:
        st.info(f"Estimated time: {est.text}.", icon=":material/schedule:")


def use_learning_rate(optimizer: str, value: float) -> None:
    st.session_state[key("optimizer")] = optimizer
    st.session_state[key(f"learning_rate_{optimizer}")] = float(f"{value:.2g}")


def lr_finder(ds: Dataset, config: TrainConfig, problem: str | None) -> None:
    st.subheader("Learning-rate finder")
    st.caption(
        "A short test run on the training images: the learning rate grows from 1e-7 to 10, one batch per step, "
        "and the loss shows which rates learn and which diverge. It uses the feature cache when the layers before "
        "the trainable ones are frozen, so it takes seconds; it saves nothing."
    )
    if st.session_state.get(LR_JOB) is None and st.button("Find a learning rate", icon=":material/query_stats:"):
        if problem:
            session.error(problem, icon=":material/error:")
        else:
            tasks.start(LR_JOB, LR_FIND, {"config": config.to_dict()}, ds)
            st.session_state[LR_FINDING + "_for"] = {"image_size": config.image_size, "head": config.head}
            st.rerun()  # draw its progress in place of the button
    snap = tasks.follow(LR_JOB)
    if snap is not None:
        if snap.state == COMPLETED:
            st.session_state[LR_FINDING] = {**snap.result, **st.session_state.get(LR_FINDING + "_for", {})}
        elif snap.error:
            session.error(snap.error, icon=":material/error:")
    finding = st.session_state.get(LR_FINDING)
    if not finding:
        return
    st.altair_chart(
        charts.lr_finder(finding["learning_rates"], finding["losses"], finding["smoothed"], finding["suggestion"]),
        width="stretch",
    )
    st.caption(
        f"{finding['optimizer']}, {finding.get('head', '')} head, {finding.get('image_size', '')} px: "
        f"{len(finding['losses'])} batches in {finding['seconds']:.1f} s ({finding['path']})."
    )
    if finding["suggestion"] is None:
        st.info(finding["reason"], icon=":material/info:")
        return
    st.markdown(f"**Suggested learning rate: {finding['suggestion']:.2g}**, {finding['reason']}.")
    st.button(
        f"Use {finding['suggestion']:.2g} as the {finding['optimizer']} learning rate", icon=":material/input:",
        on_click=use_learning_rate, args=(finding["optimizer"], finding["suggestion"]), key="use_lr",
    )  # fmt: skip
