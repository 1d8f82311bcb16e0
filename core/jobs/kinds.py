"""The kinds of job, as a table: adding a kind of heavy work is one entry here and one function in ``work``.

    kinds.KINDS["evaluate"].label        # "evaluation": how the pages and errors name it
    kinds.KINDS["export"].changes_run    # "export": a run-changing job, asked of the access rule when queued
    kinds.work_of("train")               # the function that does it (imports TensorFlow: the job's process only)

Each entry names its work function by ``module:function`` rather than holding it: the web server lists, queues and
renders jobs without importing what they run (TensorFlow), and only the job's own process resolves the name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

TRAIN, LR_FIND, EVALUATE, SPEED = "train", "lr_find", "evaluate", "speed"
LABEL_ISSUES = "label_issues"
EXPORT = "export"
BAKEOFF = "bakeoff"
DUPLICATES = "duplicates"


@dataclass(frozen=True)
class Kind:
    label: str  # in words: "the {label} failed unexpectedly"
    work: str  # "module:function" doing it in the job's process: (Context) -> (state, metrics, result)
    changes_run: str = ""  # a job that rewrites a file of a run: the verb the access rule is asked with


KINDS = {
    TRAIN: Kind("training", "core.jobs.work:train"),
    LR_FIND: Kind("learning-rate test", "core.jobs.work:lr_find"),
    EVALUATE: Kind("evaluation", "core.jobs.work:evaluate", changes_run="evaluate"),
    SPEED: Kind("speed test", "core.jobs.work:speed"),
    LABEL_ISSUES: Kind("label-error search", "core.jobs.work:label_issues", changes_run="check the labels of"),
    EXPORT: Kind("export", "core.jobs.work:export", changes_run="export"),
    BAKEOFF: Kind("backbone bake-off", "core.jobs.work:bakeoff"),
    DUPLICATES: Kind("duplicate search", "core.jobs.work:duplicates"),
}


def label(kind: str) -> str:
    """A kind in words; an unknown one (a row of a newer version) as it is written."""
    return KINDS[kind].label if kind in KINDS else kind


def work_of(kind: str) -> Callable:
    """The function doing a job of this kind, imported now (in the job's process).

    Raises:
        ValueError: not a kind of job.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown job kind. Received: kind={kind!r}")
    module, _, name = KINDS[kind].work.partition(":")
    return getattr(importlib.import_module(module), name)


def preload() -> None:
    """Import every kind's work now (a warm worker: TensorFlow's seconds paid before anyone presses Train)."""
    for kind in KINDS.values():
        importlib.import_module(kind.work.partition(":")[0])
