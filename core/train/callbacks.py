"""What a training tells whoever listens: ``Event``s from a Keras callback, and the whole-epochs-only loggers.

    listener(Event("training", "batch", done, total, elapsed, eta, epoch=..., logs={"loss": ...}))

The callback calls a plain function (the CLI's progress bars, a job's records, a page's test); it does not know
who listens. A stop ends the fit within one batch; only whole epochs are recorded (history.csv, early stopping).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.model import backend  # noqa: F401  (quiet TensorFlow import, before keras)

# isort: split
import keras

from core.util.errors import Cancelled


@dataclass
class Event:
    """A progress report; ``kind`` says what ended.

    ``stage`` is "features" (images through the frozen prefix, or from the cache), "reading" (decoding images
    for end-to-end training) or "training" (batches).
    """

    stage: str
    kind: str  # "progress" (reading), "batch", "epoch"
    done: int  # images read, or batches done over the whole run
    total: int
    elapsed: float
    eta: float | None
    epoch: int = 0  # 1-based
    epochs: int = 0
    batch: int = 0  # 1-based within the epoch
    batches: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    message: str = ""  # kind "plan": which training path the run takes, and why
    phase: int = 0  # 1 or 2 in a two-phase run


Listener = Callable[[Event], None]


class ReportingCallback(keras.callbacks.Callback):
    """Reports every batch and every whole epoch as an Event, and asks ``should_stop`` after every batch.

    A stop ends training after the current batch and skips the rest of that epoch's validation. Such an epoch is
    not whole: its loss covers part of the images and its validation part of the split, so it is not counted,
    reported, or kept in ``rows`` (nor, through ``WholeEpochs``, logged or used for early stopping).
    """

    def __init__(self, epochs: int, on_event: Listener | None, should_stop: Callable[[], bool]):
        super().__init__()
        self.epochs, self.on_event, self.should_stop = epochs, on_event, should_stop
        self.epoch = 0
        self.batches = 0
        self.completed = 0  # whole epochs over every phase
        self.rows: list[dict[str, float]] = []  # the logs of each whole epoch, with "phase" in a two-phase run
        self.whole = True  # the current epoch has not been cut short by a stop
        self.fitting = False
        self.phase = 0
        self.start: float | None = None

    def on_train_begin(self, logs=None):
        if self.start is None:  # a second phase continues the first one's clock
            self.start = time.monotonic()
        self.batches = self.params.get("steps") or 1
        self.fitting = True

    def on_train_end(self, logs=None):
        self.fitting = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.whole = True

    def _event(self, kind: str, batch: int, logs) -> Event:
        done = self.epoch * self.batches + batch
        total = self.epochs * self.batches
        elapsed = time.monotonic() - self.start
        return Event(
            stage="training",
            kind=kind,
            done=done,
            total=total,
            elapsed=elapsed,
            eta=elapsed / done * (total - done) if done else None,
            epoch=self.epoch + 1,
            epochs=self.epochs,
            batch=batch,
            batches=self.batches,
            logs={k: float(v) for k, v in (logs or {}).items()},
            phase=self.phase,
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.on_event:
            self.on_event(self._event("batch", batch + 1, logs))
        if self.should_stop():
            self.model.stop_training = True
            if batch + 1 < self.batches or not self.params.get("steps"):  # batches left, or none can tell
                self.whole = False

    def on_test_batch_end(self, batch, logs=None):
        # Only the validation inside fit is cut short: the score of the saved model must cover the whole split.
        if self.fitting and self.should_stop():
            self.model.stop_evaluating = True
            self.whole = False

    def on_epoch_end(self, epoch, logs=None):
        if not self.whole:
            return
        self.completed += 1
        row = {k: float(v) for k, v in (logs or {}).items()}
        self.rows.append({**row, "phase": self.phase} if self.phase else row)
        if self.on_event:
            self.on_event(self._event("epoch", self.batches, logs))
        if self.should_stop():
            self.model.stop_training = True  # a stop during the epoch's end starts no epoch that would be thrown away


class WholeEpochs:
    """Mixin for a Keras callback placed after ``reporter``: an epoch a stop cut short never reaches it."""

    reporter: ReportingCallback

    def on_epoch_end(self, epoch, logs=None):
        if self.reporter.whole:
            super().on_epoch_end(epoch, logs)


class WholeEpochCSVLogger(WholeEpochs, keras.callbacks.CSVLogger):
    pass


class WholeEpochEarlyStopping(WholeEpochs, keras.callbacks.EarlyStopping):
    pass


def stage_reporter(
    stage: str, listener: Listener | None, stop: threading.Event, offset: int, grand_total: int
) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` for reading or the feature pass: reports an Event and honours a stop."""
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        if stop.is_set():
            raise Cancelled("Stopped before training started; nothing was saved.")
        if listener and done:
            elapsed = time.monotonic() - start
            n = offset + done
            listener(Event(stage, "progress", n, grand_total, elapsed, elapsed / done * (grand_total - n)))

    return report
