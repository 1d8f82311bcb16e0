"""Suspected label errors of a saved dataset's runs, judged where the review queue is: keep the label, take the
suggested one, relabel to another class, or exclude the image from training.

    found = gather(dataset_id, [(run.dataset_version, run.id, issues.suspects), ...])   # list[Suspect]
    judge(dataset_id, found[0], RELABEL, user, label="cats")     # or KEEP, EXCLUDE
    review.undo(dataset_id, user)          # undoes a judgement like any other decision of the queue
    review.commit(dataset_id, user, msg)   # the relabels become the next version: versions.commit(relabel=...)

The suspects come from each run's search (``core.evaluate.label_issues``, read by the page: this layer may not
import it), keyed by path within the dataset at the version the run trained on. Each path is mapped to its content
hash (``open_dataset(id, version).items``), and an image is kept once (the first search given wins) and only while
the newest version holds it. *Keep* and *exclude* are saved at once as ``core.workspace.decisions`` (what the next
training leaves out, shown on the Evaluate page too); a relabel waits in a review row (kind ``suspect``) until the
next commit. Every judgement is logged like a queue decision, so ← undoes it, keep and exclude included. Who may
judge: who may change the dataset (``core.workspace.review``'s rule).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from core.util.errors import UserError
from core.workspace import datasets, db, decisions, review, versions
from core.workspace.review_items import (
    DISCARDED,
    LABELLED,
    QUEUED,
    SUSPECT,
    SUSPECTS,
    Item,
    check_change,
    check_label,
    row_of,
    saved_dataset,
)

KEEP, EXCLUDE, RELABEL = decisions.KEEP, decisions.EXCLUDE, "relabel"
OPEN = "open"
ACTIONS = (KEEP, EXCLUDE, RELABEL)


@dataclass(frozen=True)
class Suspect:
    path: str  # within the dataset's files
    hash: str
    given: str  # the class the search found it under
    suggested: str
    confidence: float  # of the suggested class, out of fold
    run_id: str  # the run whose search found it
    state: str = OPEN  # "open" | "keep" | "exclude" | "relabel"
    label: str | None = None  # the class it is relabelled to
    current: str = ""  # its class in the newest version
    version: int | None = None  # the version a relabel went into; None while it waits for a commit


def gather(dataset_id: str, found: Iterable[tuple[int | None, str, Sequence[Mapping]]]) -> list[Suspect]:
    """The suspects of the dataset's searches, with what was decided on each: ``found`` holds, per run, the dataset
    version it trained on, its id and its suspects (``LabelIssues.suspects``), most recent search first."""
    saved = saved_dataset(dataset_id)
    now = {e.hash: e.label for e in versions.newest(saved.id).entries}
    held = {it.hash: it for it in review.rows(saved.id, SUSPECTS)}
    decided = decisions.decisions(saved.id)
    out: list[Suspect] = []
    seen: set[str] = set()
    for version, run_id, suspects in found:
        try:
            digests = {it.path: it.digest for it in datasets.open_dataset(saved.id, touch=False, version=version).items}
        except UserError:  # a version since removed, or damaged files: its search cannot be mapped
            continue
        for s in suspects:
            digest = digests.get(str(s.get("file", "")))
            if not digest or digest in seen or digest not in now:
                continue
            seen.add(digest)
            base = Suspect(str(s["file"]), digest, str(s["given"]), str(s["suggested"]), float(s["confidence"]),
                           run_id, current=now[digest])  # fmt: skip
            out.append(_with_state(base, held.get(digest), decided.get(base.path, {}).get("decision")))
    return out


def _with_state(s: Suspect, row: Item | None, decision: str | None) -> Suspect:
    if row is not None and row.version is None and row.state != QUEUED:
        if row.state == DISCARDED:
            return replace(s, state=EXCLUDE)
        return replace(s, state=KEEP) if row.label == s.given else replace(s, state=RELABEL, label=row.label)
    if decision in (KEEP, EXCLUDE):
        return replace(s, state=decision)
    if s.current != s.given:  # relabelled by a commit since the search
        return replace(s, state=RELABEL, label=s.current, version=row.version if row is not None else None)
    return s


def judge(dataset_id: str, suspect: Suspect, action: str, user: str, label: str | None = None) -> Suspect:
    """Keep the suspect's label, exclude it from training, or relabel it to ``label`` (the next commit applies it);
    return it as it is now. Undone by ``review.undo``.

    Raises:
        NotAllowed: ``user`` may not change the dataset.
        UserError: ``label`` is not a usable class name.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}. Received: action={action!r}")
    saved = saved_dataset(dataset_id)
    check_change(user, saved)
    if action == RELABEL:
        label = check_label(label)
        action = KEEP if label == suspect.given else RELABEL
    prior = decisions.decisions(saved.id).get(suspect.path, {}).get("decision")
    outcomes = {KEEP: (LABELLED, suspect.given), EXCLUDE: (DISCARDED, None), RELABEL: (LABELLED, label)}
    state, row_label = outcomes[action]
    with db.connect(write=True) as con:
        row = _open_row(con, saved.id, suspect, user)
        before = {"decision": prior, "given": suspect.given, "suggested": suspect.suggested}
        review.change(con, row, state, row_label, user, time.time(), before=before)
    decisions.decide(saved.id, suspect.path, None if action == RELABEL else action, user, suspect.given,
                     suspect.suggested)  # fmt: skip
    return _with_state(suspect, review.item(row["id"]), None if action == RELABEL else action)


def _open_row(con, dataset_id: str, suspect: Suspect, user: str):
    """The suspect's row, made (or opened again after a commit closed it) to take a judgement."""
    row = con.execute("SELECT * FROM review_items WHERE dataset_id = ? AND kind = ? AND hash = ?",
                      (dataset_id, SUSPECTS, suspect.hash)).fetchone()  # fmt: skip
    if row is None:
        item_id = secrets.token_hex(8)
        top = json.dumps([[suspect.suggested, suspect.confidence], [suspect.given, 0.0]])
        con.execute(
            "INSERT INTO review_items (id, dataset_id, kind, hash, name, source, run_id, top, added, added_by, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item_id, dataset_id, SUSPECTS, suspect.hash, suspect.path, SUSPECT, suspect.run_id, top, time.time(),
             str(user or ""), QUEUED),
        )  # fmt: skip
        return row_of(con, item_id)
    if row["version"] is not None:
        con.execute("UPDATE review_items SET version = NULL, state = ? WHERE id = ?", (QUEUED, row["id"]))
        return row_of(con, row["id"])
    return row
