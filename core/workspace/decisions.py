"""A saved dataset's decisions on its images' labels: "exclude from training" or "keep", and what training leaves out.

    decide(dataset_id, "ants/12.jpg", EXCLUDE, user="ann@example.com")   # or KEEP, or None to undecide
    decisions(dataset_id)                      # path -> {"decision", "by", "at", "given", "suggested"}
    excluded(dataset_id)                       # what the next training of that dataset leaves out
    dataset, config = apply_exclusions(dataset, config)   # core.train.training does this as a run starts

Decisions ("exclude from training" / "keep") belong to the saved dataset, not to the run: they are kept in the
dataset's folder (``datasets/<id>/label_decisions.json``, beside ``dataset.json``), read by every session and every
job's process (a job on another machine of a Ray cluster reads the same shared folder; the workspace database is
only reachable on the app's machine). Writes are atomic and serialised with a file lock, so two people deciding at
once lose nothing. The next training of the dataset leaves the excluded images out of both training and validation
and records them in its ``config.json`` (``exclude``) and their number in ``metrics.json`` (``excluded_images``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.util.errors import UserError
from core.util.files import read_json, write_json
from core.workspace import access, records

DECISIONS_FILE = "label_decisions.json"  # in the saved dataset's folder
DECISIONS_FORMAT = 1
EXCLUDE, KEEP = "exclude", "keep"
DECISIONS = (EXCLUDE, KEEP)


def _decisions_path(dataset_id: str) -> Path:
    if not records.exists(dataset_id):
        raise UserError(
            "Exclusions are saved with a dataset saved on this server; this run's dataset is not (it was trained "
            "from a zip path, or the dataset was deleted). Upload the zip on the Dataset page and train from it."
        )
    return records.datasets_dir() / dataset_id / DECISIONS_FILE


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time, across the server's processes (read, change, write without losing another's)."""
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_decisions(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != DECISIONS_FORMAT or not isinstance(data.get("files"), dict):
        return {}
    return {k: v for k, v in data["files"].items() if isinstance(v, dict) and v.get("decision") in DECISIONS}


def decisions(dataset_id: str) -> dict[str, dict[str, Any]]:
    """Every decision saved for the dataset: path -> {"decision", "by", "at", "given", "suggested"}; {} for none
    (or for a dataset that is not saved)."""
    if not dataset_id or not records.exists(dataset_id):
        return {}
    return _read_decisions(records.datasets_dir() / dataset_id / DECISIONS_FILE)


def decide(
    dataset_id: str, file: str, decision: str | None, user: str = "", given: str = "", suggested: str = ""
) -> dict[str, dict[str, Any]]:
    """Save ``decision`` (EXCLUDE or KEEP; None forgets the decision) for one image of the dataset; return all.

    A decision changes what the dataset trains on, so only the dataset's owner or an admin may (core.workspace.access).

    Raises:
        NotAllowed: ``user`` may not change the dataset.
        UserError: the dataset is not a saved one.
    """
    if decision not in (*DECISIONS, None):
        raise ValueError(f"decision must be one of {DECISIONS} or None. Received: decision={decision!r}")
    path = _decisions_path(dataset_id)
    saved = records.get(dataset_id)
    access.check(
        user,
        saved.added_by if saved else access.GUEST,
        f"change which images {saved.name if saved else 'the dataset'} trains on",
    )
    with _locked(path):
        current = _read_decisions(path)
        if decision is None:
            current.pop(file, None)
        else:
            current[file] = {"decision": decision, "by": user, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                             "given": given, "suggested": suggested}  # fmt: skip
        write_json(path, {"format": DECISIONS_FORMAT, "files": current})
    return current


def excluded(dataset_id: str) -> list[str]:
    """The dataset's images decided 'exclude from training', sorted."""
    return sorted(f for f, d in decisions(dataset_id).items() if d["decision"] == EXCLUDE)


def apply_exclusions(dataset: Dataset, config: TrainConfig) -> tuple[Dataset, TrainConfig]:
    """The dataset without the excluded images, and the config that records them (``config.exclude``).

    Excluded: the images ``config.exclude`` names, and, for a saved dataset, those decided 'exclude from training'
    for it. A name that is not an image of the dataset is ignored (the config records only what was left out).

    Raises:
        UserError: the exclusions would leave a class with fewer than 2 images.
    """
    wanted = set(config.exclude) | set(excluded(dataset.id))
    if not wanted:
        return dataset, config
    gone = sorted(it.path for it in dataset.items if it.path in wanted)
    if not gone:
        return dataset, dataclasses.replace(config, exclude=())
    kept = [it for it in dataset.items if it.path not in wanted]
    before, after = Counter(it.label for it in dataset.items), Counter(it.label for it in kept)
    short = [dataset.classes[c] for c in before if after[c] < 2]
    if short:
        raise UserError(
            f"The {len(gone)} images excluded from training leave fewer than 2 images of {', '.join(short)}; keep "
            "some of them (on the Evaluate page) to train."
        )
    return dataclasses.replace(dataset, items=kept), dataclasses.replace(config, exclude=tuple(gone))
