"""The Train form as a user left it, per dataset, in the workspace database.

    forms.save(dataset_id, user, {"cfg_epochs": 5, "cfg_optimizer": "adam"})
    forms.load(dataset_id, user)        # the same dict, or None

A reload, a new tab or a server restart restores the form for that dataset. ``user`` is the signed-in e-mail, or
'' for guests (who share one workspace, and so one form per dataset). Values are plain JSON.
"""

from __future__ import annotations

import json
import time
from typing import Any

from core.workspace import db


def load(dataset_id: str, user: str) -> dict[str, Any] | None:
    with db.connect() as con:
        row = con.execute(
            "SELECT settings FROM form_settings WHERE dataset_id = ? AND user = ?", (dataset_id, user)
        ).fetchone()
    return json.loads(row["settings"]) if row else None


def save(dataset_id: str, user: str, settings: dict[str, Any]) -> None:
    with db.connect(write=True) as con:
        con.execute(
            "INSERT OR REPLACE INTO form_settings (dataset_id, user, settings, updated) VALUES (?, ?, ?, ?)",
            (dataset_id, user, json.dumps(settings, sort_keys=True), time.time()),
        )
