"""python -m core jobs: the jobs on this server, queued, running and recently finished."""

from __future__ import annotations

import argparse
import json

from core.cli.common import (
    Command,
    iso,
    print_table,
)  # fmt: skip
from core.workspace import access


def job_progress(job) -> str:
    if job.finished:
        acc = job.metrics.get("val_accuracy")
        return f"val acc {acc:.1%}" if acc is not None else (job.error or "")[:60]
    if not job.running:
        return "-"
    eta = f", ETA {round(job.eta)} s" if job.eta is not None else ""
    if job.epochs and job.state == "training":
        return f"epoch {job.epoch}/{job.epochs}{eta}"
    return f"{job.stage or job.state} {job.done}/{job.total}{eta}"


def add_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--all", action="store_true", help="every job ever recorded, not only the last day's")


def run_jobs(args) -> int:
    from core.jobs.registry import JobRegistry

    found = JobRegistry(dispatch=False).jobs(recent=None if args.all else 24 * 3600)
    if args.json:
        keep = ("id", "kind", "state", "owner", "dataset_id", "dataset", "created", "started", "ended", "done", "total",
                "epoch", "epochs", "eta", "error", "metrics", "restarted_as")  # fmt: skip
        rows = [{k: getattr(j, k) for k in keep} | {"stopping": j.stopping} for j in found]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("no jobs" + ("" if args.all else " in the last day (--all lists older ones)"))
        return 0
    header = ("id", "kind", "state", "by", "dataset", "progress", "created")
    rows = [
        (j.id, j.label, "stopping" if j.stopping else j.state, access.display(j.owner) if j.owner else "guest",
         j.dataset or "-", job_progress(j), iso(j.created, " "))
        for j in found
    ]  # fmt: skip
    print_table(header, rows)
    return 0


COMMANDS = (
    Command("jobs", "list the jobs on this server: queued, running and finished in the last day", add_jobs, run_jobs),
)
