"""A saved dataset's review queue: images the model was sent, kept to be labelled and added as its next version.

    item = enqueue(dataset_id, data, "IMG_1.jpg", run_id=run.id, top=p.top, not_sure=not p.sure,
                   source="classify", user=user)       # QueueFull when the queue holds CLASSIFIER_REVIEW_CAP already
    queue(dataset_id)                                   # the queued items, the most informative first
    decide(item.id, "cats", user); decide(item.id, None, user)    # a label, or discard it
    undo(dataset_id, user)                              # the user's last decision undone (again: the one before)
    progress(dataset_id)                                # (decided, total) since the last commit
    commit(dataset_id, user, "12 reviewed photos")      # the labelled images -> versions.commit(add=...)

**What is kept.** An image's bytes once per dataset, by content (``datasets/<id>/review/<sha256><ext>``: the same
image sent twice is one item, whatever became of it), and a row of the workspace database's ``review_items``: where
it came from (``source``: api, classify, demo, upload), the key or user who sent it, the run's best answers, "not
sure" and "none of these". A commit closes the decided items: the labelled ones go into the dataset's next version
(their bytes into its files), the discarded ones' bytes go (their rows stay: the same image is not queued again).

**The cap.** A dataset's queue holds at most ``CLASSIFIER_REVIEW_CAP`` items (default 2000) waiting for a label or
the next commit; one more is refused with ``QueueFull`` (a sentence), never by dropping a queued item. Discarding
frees a place.

**Order** (``Item.priority``): what a label would teach the model most comes first: images the run answered "none
of these", then "not sure" ones, then the smallest margin between its two best classes; the oldest first among equals.

**Who may do what** (``core.workspace.access``). Queueing an image is allowed to whoever may classify with the run:
the caller has checked its capability (an API key made to keep what it is sent, a page the user may open); the queue
only validates, stores and caps. Every decision is a change of the dataset, so labelling, discarding, undoing,
committing, and queueing an image *with* a label (an upload on the Dataset page) are for those who may change the
dataset: its owner and the admins; anyone, for a dataset a guest saved. Suspected label errors of the dataset's
runs go through the same rows (kind ``suspect``: ``core.workspace.suspects``), undone and committed the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Sequence

from core.util.errors import UserError
from core.workspace import db, decisions, records, versions
from core.workspace.manifests import ADDED
from core.workspace.review_items import (
    COMMITTED,
    DISCARDED,
    FOLDER,
    LABELLED,
    MAX_CLASS,
    MAX_TOP,
    NEW,
    QUEUED,
    SOURCES,
    STATES,
    SUSPECT,
    SUSPECTS,
    Item,
    QueueFull,
    SavedDataset,
    cap,
    check_change,
    check_label,
    forget_stale,
    image_ext,
    item,
    may_label,
    plain_name,
    row_of,
    saved_dataset,
    store,
    to_item,
    unknown_item,
    waiting,
)

__all__ = ["COMMITTED", "DISCARDED", "LABELLED", "MAX_CLASS", "QUEUED", "SOURCES", "SUSPECT", "Item", "QueueFull",
           "cap", "check_label", "commit", "decide", "enqueue", "image_bytes", "item", "may_label", "pending",
           "progress", "queue", "undo"]  # fmt: skip


# ---------------------------------------------------------------------------------------------- queueing


def enqueue(
    dataset_id: str,
    image: bytes,
    name: str,
    *,
    run_id: str = "",
    top: Sequence[tuple[str, float]] = (),
    not_sure: bool = False,
    none_of_these: bool | None = None,
    source: str,
    key_id: str = "",
    user: str = "",
    label: str | None = None,
) -> Item:
    """Keep ``image`` in the dataset's review queue (already labelled ``label``, for an upload) and return its item.

    The same image queued again for the dataset is the same item (labelled now if it still waited and ``label`` is
    given). Whoever may classify with the run may queue (the caller checks); a label needs the right to change the
    dataset.

    Raises:
        UnknownDataset: no saved dataset has this id.
        QueueFull: the queue already holds ``cap()`` items; nothing was kept.
        NotAllowed: a label from someone who may not change the dataset.
        UserError: ``image`` is not a usable image, or ``label`` not a usable class name; nothing was kept.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}. Received: source={source!r}")
    saved = saved_dataset(dataset_id)
    ext = image_ext(image, plain_name(name, ""))
    name, image = plain_name(name, ext), bytes(image)
    if label is not None:
        label = check_label(label)
        check_change(user, saved)
    digest, now = hashlib.sha256(image).hexdigest(), time.time()
    answers = json.dumps([[str(c), float(p)] for c, p in list(top)[:MAX_TOP]])
    with db.connect(write=True) as con:
        forget_stale(con, saved)
        row = con.execute("SELECT * FROM review_items WHERE dataset_id = ? AND kind = ? AND hash = ?",
                          (saved.id, NEW, digest)).fetchone()  # fmt: skip
        if row is None:
            if waiting(con, saved.id) >= cap():
                raise QueueFull(
                    f"The review queue of {saved.name} is full ({cap():,} images wait for a label or for the next "
                    f"version): label or discard some on the Review page first; {name} was not kept."
                )
            store(records.datasets_dir() / saved.id, digest, ext, image)
            item_id = secrets.token_hex(8)
            con.execute(
                "INSERT INTO review_items (id, dataset_id, kind, hash, ext, name, source, run_id, key_id, top, "
                "not_sure, none_of_these, added, added_by, state, label, decided_by, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item_id, saved.id, NEW, digest, ext, name, source, str(run_id or ""), str(key_id or ""), answers,
                 int(bool(not_sure)), None if none_of_these is None else int(bool(none_of_these)), now,
                 str(user or ""), QUEUED if label is None else LABELLED, label, str(user or "") if label else "",
                 now if label else None),
            )  # fmt: skip
            row = row_of(con, item_id)
        elif label is not None and row["state"] == QUEUED:
            change(con, row, LABELLED, label, user, now)
            row = row_of(con, row["id"])
    return to_item(row)


# ---------------------------------------------------------------------------------------------- reading


def queue(dataset_id: str, state: str | None = QUEUED) -> list[Item]:
    """The dataset's images in ``state`` (None: every state), the most informative first (``Item.priority``)."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {STATES} or None. Received: state={state!r}")
    return rows(dataset_id, NEW, state)


def rows(dataset_id: str, kind: str, state: str | None = None) -> list[Item]:
    saved = saved_dataset(dataset_id)
    query = "SELECT * FROM review_items WHERE dataset_id = ? AND kind = ? AND added >= ?"
    args: tuple = (saved.id, kind, saved.added)
    if state is not None:
        query, args = query + " AND state = ?", (*args, state)
    with db.connect() as con:
        found = [to_item(r) for r in con.execute(query, args)]
    return sorted(found, key=lambda it: it.priority)


def progress(dataset_id: str) -> tuple[int, int]:
    """(decided, total) of the dataset's queued images since its last commit: "12 of 80 reviewed"."""
    saved = saved_dataset(dataset_id)
    with db.connect() as con:
        counted = dict(con.execute(
            "SELECT state, count(*) FROM review_items WHERE dataset_id = ? AND kind = ? AND version IS NULL "
            "AND added >= ? GROUP BY state", (saved.id, NEW, saved.added),
        ).fetchall())  # fmt: skip
    decided = counted.get(LABELLED, 0) + counted.get(DISCARDED, 0)
    return decided, decided + counted.get(QUEUED, 0)


def image_bytes(item: Item) -> bytes:
    """The item's image: as kept for review, or, once committed or for a suspect, from the dataset's files."""
    folder = records.datasets_dir() / item.dataset_id
    files = folder / records.FILES
    if item.source == SUSPECT:
        path = (files / item.name).resolve()
        candidates = [path] if path.is_relative_to(files.resolve()) else []  # a path from a file: never outside
    else:
        candidates = [folder / FOLDER / f"{item.hash}{item.ext}", files / ADDED / f"{item.hash}{item.ext}"]
    for path in candidates:
        with contextlib.suppress(OSError):
            return path.read_bytes()
    raise UserError(f"The image {item.name} is no longer on the server (it was discarded, or its dataset deleted).")


# ---------------------------------------------------------------------------------------------- deciding


def change(con, row, state: str, label: str | None, user: str, now: float | None, before: dict | None = None) -> None:
    """Change an open row, and log what it was before for ``undo`` (``before``: more to restore, for suspects)."""
    was = {"state": row["state"], "label": row["label"], "decided_by": row["decided_by"],
           "decided_at": row["decided_at"], **(before or {})}  # fmt: skip
    con.execute("INSERT INTO review_log (dataset_id, user, item_id, before) VALUES (?, ?, ?, ?)",
                (row["dataset_id"], str(user or ""), row["id"], json.dumps(was)))  # fmt: skip
    con.execute("UPDATE review_items SET state = ?, label = ?, decided_by = ?, decided_at = ? WHERE id = ?",
                (state, label, str(user or ""), now, row["id"]))  # fmt: skip


def closed(row, saved: SavedDataset) -> UserError:
    return UserError(
        f"{row['name']} is already part of version {row['version']} of {saved.name}: it cannot be changed here any "
        "more (a later version can relabel or remove it)."
    )


def decide(item_id: str, label: str | None, user: str) -> Item:
    """Label the item (``label``: a class, a new one adds it) or discard it (None); return it as it is now.

    Raises:
        UserError: no such item, the item is committed already, or ``label`` is not a usable class name.
        NotAllowed: ``user`` may not change the dataset.
    """
    found = item(item_id)
    saved = saved_dataset(found.dataset_id)
    check_change(user, saved)
    label = None if label is None else check_label(label)
    with db.connect(write=True) as con:
        row = row_of(con, found.id)
        if row is None:
            raise unknown_item(item_id)
        if row["version"] is not None:
            raise closed(row, saved)
        change(con, row, DISCARDED if label is None else LABELLED, label, user, time.time())
        row = row_of(con, found.id)
    return to_item(row)


def undo(dataset_id: str, user: str) -> Item | None:
    """Undo ``user``'s last decision on the dataset's open items (and, called again, the one before); return the
    item as it is again, or None when there is nothing left to undo."""
    saved = saved_dataset(dataset_id)
    check_change(user, saved)
    with db.connect(write=True) as con:
        last = con.execute(
            "SELECT l.seq AS seq, l.before AS before, l.item_id AS item_id FROM review_log l "
            "JOIN review_items i ON i.id = l.item_id WHERE l.dataset_id = ? AND l.user = ? AND i.version IS NULL "
            "ORDER BY l.seq DESC LIMIT 1", (saved.id, str(user or "")),
        ).fetchone()  # fmt: skip
        if last is None:
            return None
        was = json.loads(last["before"])
        con.execute("UPDATE review_items SET state = ?, label = ?, decided_by = ?, decided_at = ? WHERE id = ?",
                    (was["state"], was["label"], was["decided_by"], was["decided_at"], last["item_id"]))  # fmt: skip
        con.execute("DELETE FROM review_log WHERE seq = ?", (last["seq"],))
        row = row_of(con, last["item_id"])
    if row["kind"] == SUSPECTS and "decision" in was:  # a suspect's keep/exclude lives in its decisions file
        decisions.decide(saved.id, row["name"], was["decision"], user, was.get("given", ""), was.get("suggested", ""))
    return to_item(row)


# ---------------------------------------------------------------------------------------------- committing


def _plan(saved: SavedDataset) -> tuple[list[Item], list[Item], dict[str, str]]:
    """The open decided items, the labelled images among them, and the relabels of suspects they hold."""
    with db.connect() as con:
        decided = [to_item(r) for r in con.execute(
            "SELECT * FROM review_items WHERE dataset_id = ? AND version IS NULL AND added >= ? AND state IN (?, ?)",
            (saved.id, saved.added, LABELLED, DISCARDED),
        )]  # fmt: skip
    labelled = [it for it in decided if it.state == LABELLED]
    held = {e.hash: e.label for e in versions.newest(saved.id).entries}
    relabel = {it.hash: it.label for it in labelled if it.source == SUSPECT and held.get(it.hash, it.label) != it.label}
    return decided, [it for it in labelled if it.source != SUSPECT], relabel


def pending(dataset_id: str) -> tuple[int, int]:
    """(images to add, suspects to relabel): what the next ``commit`` would make a version of."""
    _, new, relabel = _plan(saved_dataset(dataset_id))
    return len(new), len(relabel)


def commit(dataset_id: str, user: str, message: str) -> versions.Version:
    """Make the dataset's next version: the newest one + the labelled images (``versions.commit(add=...)``) + the
    suspects relabelled (``relabel=``); close every decided item (committed, or discarded for good).

    Raises:
        UserError: nothing is labelled; or what ``versions.commit`` refuses (nothing is closed then).
        NotAllowed: ``user`` may not change the dataset.
    """
    saved = saved_dataset(dataset_id)
    check_change(user, saved)
    decided, new, relabel = _plan(saved)
    if not new and not relabel:
        raise UserError(
            "Nothing is labelled to add yet: label some images on the Review page first; no new version was made."
        )
    add = [(image_bytes(it), it.name, it.label) for it in new]
    version = versions.commit(saved.id, user, message, add=add, relabel=relabel)
    with db.connect(write=True) as con:
        for it in decided:
            con.execute("UPDATE review_items SET version = ?, state = ? WHERE id = ?",
                        (version.number, COMMITTED if it.state == LABELLED else DISCARDED, it.id))  # fmt: skip
            con.execute("DELETE FROM review_log WHERE item_id = ?", (it.id,))
    for it in decided:  # committed images are in the dataset's files now; discarded ones are not wanted
        if it.source != SUSPECT:
            with contextlib.suppress(OSError):
                (records.datasets_dir() / saved.id / FOLDER / f"{it.hash}{it.ext}").unlink()
    return version
