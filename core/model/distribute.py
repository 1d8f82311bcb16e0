"""Which devices a training runs on: two or more GPUs are used together through ``tf.distribute``.

    placement = distribute.for_training(batch_size=32, n_train=240, n_val=60)
    with placement.strategy.scope():     # building, compiling, the feature pass and fit all happen in the scope
        model = build_model(...)
    placement.message                    # "Training on 2 GPUs (GPU:0, GPU:1) with MirroredStrategy: ...", or ""
    distribute.strategy()                # the strategy alone, whatever the sizes

``strategy()`` is ``MirroredStrategy`` over the visible GPUs when there are two or more, else TensorFlow's default
strategy (one device: nothing changes, and the run's plan and metrics say nothing about devices).
Under ``MirroredStrategy`` every device holds a copy of the model and takes an equal share of each batch; the
gradients are summed across the copies before each update, so the run follows the same path as on one device
with the same batch size (the configured batch size is the whole batch, not each device's share).
Keras (3.15) builds a model trained under a strategy from the first batch of each ``fit`` and ``evaluate`` and
fails when that batch does not split evenly between the devices, so ``for_training`` falls back to one device
when the first training batch cannot, and ``evaluation_batch`` picks a scoring batch size that can.

``CLASSIFIER_DEVICES`` names the devices instead: comma-separated TensorFlow device names, e.g. ``/gpu:0,/gpu:2``
to leave the other GPUs to other work, or ``/cpu:0,/cpu:1`` where logical CPU devices were configured (as the
tests do). Two or more names are mirrored; a single name runs everything on that device.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import settings
from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import tensorflow as tf

from core.util.errors import UserError

Strategy = tf.distribute.Strategy


def _key(name: str) -> tuple[str, int | None]:
    spec = tf.DeviceSpec.from_string(name)
    return (spec.device_type or "").upper(), spec.device_index


def _short(name: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'GPU:1'."""
    kind, index = _key(name)
    return f"{kind}:{index}"


def _named_devices(value: str) -> list[str]:
    """The devices ``CLASSIFIER_DEVICES`` names, as this process's logical device names, checked.

    Raises:
        UserError: a name that is not a device, or not one of this machine's, or named twice.
    """
    known = {_key(d.name): d.name for d in tf.config.list_logical_devices()}
    have = ", ".join(sorted(_short(name) for name in known.values()))
    devices = []
    for name in (part.strip() for part in value.split(",")):
        if not name:
            continue
        try:
            key = _key(name)
        except ValueError:
            key = None
        if key not in known:
            raise UserError(
                f"CLASSIFIER_DEVICES names {name!r}, which is not a device of this machine (it has {have}); "
                "name devices as /gpu:0,/gpu:1."
            )
        if known[key] in devices:
            raise UserError(f"CLASSIFIER_DEVICES names {name!r} twice; name each device once.")
        devices.append(known[key])
    return devices


def strategy() -> Strategy:
    """The strategy a training runs under: see the module docstring.

    Raises:
        UserError: ``CLASSIFIER_DEVICES`` names a device this machine does not have.
    """
    override = settings.current().devices
    devices = _named_devices(override) if override else [d.name for d in tf.config.list_logical_devices("GPU")]
    if override and len(devices) == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    if len(devices) >= 2:
        return tf.distribute.MirroredStrategy(devices)
    # The strategy in effect: TensorFlow's default (one device), or one the caller entered itself.
    return tf.distribute.get_strategy()


def devices(strategy: Strategy) -> list[str]:
    """The devices ``strategy`` computes on, as 'GPU:0'; [] for TensorFlow's default (wherever it places things)."""
    try:
        names = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has no devices of its own
        return []
    return [_short(name) for name in names]


def describe(strategy: Strategy) -> str:
    """One sentence for a user on the devices a training runs on; "" for the default (one device, as always)."""
    names = devices(strategy)
    if not names:
        return ""
    kind = type(strategy).__name__
    if len(names) == 1:
        return f"Training on {names[0]} ({kind})."
    what = f"{len(names)} GPUs" if all(n.startswith("GPU:") for n in names) else f"{len(names)} devices"
    return f"Training on {what} ({', '.join(names)}) with {kind}: each batch is split between them."


@dataclass
class Placement:
    """Where a training runs: the strategy to enter, and the sentence its plan says about it ("" on one device)."""

    strategy: Strategy
    message: str


def _unsplittable(replicas: int, batch_size: int, n_train: int, n_val: int) -> str:
    if batch_size % replicas and n_train >= batch_size:
        return (
            f"a batch of {batch_size} images does not split evenly between {replicas} devices "
            f"(a batch size that is a multiple of {replicas} uses them all)"
        )
    if n_train < batch_size and n_train % replicas:
        return f"the {n_train} training images (fewer than one batch) do not split evenly between {replicas} devices"
    if n_val < replicas:
        return f"{n_val} validation image{'s' * (n_val != 1)} cannot be split between {replicas} devices"
    return ""


def for_training(batch_size: int, n_train: int, n_val: int) -> Placement:
    """``strategy()`` for a training with these batch size and split, or one device when Keras cannot split it.

    Raises:
        UserError: ``CLASSIFIER_DEVICES`` names a device this machine does not have.
    """
    chosen = strategy()
    replicas = chosen.num_replicas_in_sync
    if replicas > 1 and (why := _unsplittable(replicas, batch_size, n_train, n_val)):
        return Placement(tf.distribute.get_strategy(), f"Training on one device: {why}.")
    return Placement(chosen, describe(chosen))


def evaluation_batch(strategy: Strategy, batch_size: int, n: int) -> int:
    """A batch size for scoring ``n`` images whose first batch splits evenly between the replicas.

    The scores do not depend on the batch size; on one device it is ``batch_size`` unchanged.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return batch_size
    return max(replicas, min(batch_size, n) // replicas * replicas)
