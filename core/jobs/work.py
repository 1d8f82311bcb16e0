"""What each kind of job does, in the job's own process (``core.jobs.kinds`` names these functions).

    state, metrics, result = work.evaluate(Context(params, dataset, job_id, owner, writer, stop))

Every function takes the job's ``Context`` and returns ``(state, metrics, result)`` for the records. This module
imports the training, evaluation and export code, and with them TensorFlow: only a job's process imports it.
"""

from __future__ import annotations

from core.config import TrainConfig
from core.data import duplicates as dups
from core.evaluate import evaluation
from core.evaluate import label_issues as label_check
from core.jobs.runner import Context
from core.jobs.states import COMPLETED, STOPPED
from core.publish import bakeoff as bake
from core.publish import bundles
from core.publish import export as exporting
from core.train import lrfind, speedtest, training
from core.util.errors import UserError
from core.workspace import runs


def train(ctx: Context) -> tuple:
    config = TrainConfig.from_dict(ctx.params["config"])
    out = runs.runs_dir() / ctx.job_id
    result = training.train(ctx.dataset, config, out, ctx.writer.on_event, ctx.stop, owner=ctx.owner)
    return result.status, result.metrics, None


def lr_find(ctx: Context) -> tuple:
    config = TrainConfig.from_dict(ctx.params["config"])
    finding = lrfind.lr_find(ctx.dataset, config, progress=ctx.writer.report, stop=ctx.stop)
    return COMPLETED, {}, finding.to_dict()


def evaluate(ctx: Context) -> tuple:
    report = ctx.reporter("Evaluation stopped; nothing was saved.")
    run = ctx.run("it could be evaluated")
    ev = evaluation.evaluate_run(
        run.path, ctx.dataset, top_k=ctx.params.get("top_k", 3),
        progress=lambda done, total: report("classifying", done, total), user=ctx.owner,
    )  # fmt: skip
    return COMPLETED, {"accuracy": ev.accuracy}, None


def label_issues(ctx: Context) -> tuple:
    report = ctx.reporter("The label-error search was stopped; nothing was saved.")
    run = ctx.run("its labels could be checked")
    found = label_check.find_label_issues(
        run.path,
        ctx.dataset,
        folds=ctx.params.get("folds", label_check.DEFAULT_FOLDS),
        progress=report,
        user=ctx.owner,
    )
    return COMPLETED, {"suspects": len(found.suspects), "images": found.images}, None


def export(ctx: Context) -> tuple:
    # a format takes tens of seconds: each one shows as it starts
    report = ctx.reporter("The export was stopped; nothing was saved.", flush=True)
    run = ctx.run("it could be exported")
    bundle = exporting.export_run(run.path, bundles.exports_dir(run.path), ctx.params.get("formats") or None,
                                  int8=bool(ctx.params.get("int8")), progress=report, user=ctx.owner)  # fmt: skip
    return COMPLETED, {"passed": bundle.passed, "bundle": str(bundle.path)}, None


def speed(ctx: Context) -> tuple:
    # a dozen batches of seconds each: every one shows at once, not at the next; the probe watches the stop itself
    report = ctx.reporter(None, flush=True)
    ips = speedtest.measure_speed(ctx.params["image_size"], ctx.params["precision"], images=ctx.params.get("images"),
                               progress=report, stop=ctx.stop)  # fmt: skip
    return COMPLETED, {"images_per_second": round(ips, 3)}, None


def bakeoff(ctx: Context) -> tuple:
    # the bake-off watches the stop itself, and a stop keeps the backbones done so far: the job ends "stopped"
    report, done, stage = ctx.reporter(None), [], [""]

    def progress(step: str, count: int, total: int) -> None:
        report(step, count, total)
        if step != stage[0]:  # a new step shows at once: some (a compile, a conversion) take long between reports
            stage[0] = step
            ctx.writer.flush()

    def on_row(row: dict) -> None:  # the rows so far, in one line under the live progress
        done.append(row)
        ctx.writer.set(True, path_reason=bake.done_so_far(done))

    found = bake.bakeoff(
        ctx.dataset, ctx.params.get("backbones") or None, TrainConfig.from_dict(ctx.params["config"]),
        progress=progress, stop=ctx.stop, int8=bool(ctx.params.get("int8")), on_row=on_row,
    )  # fmt: skip
    return (STOPPED if found.stopped else COMPLETED), found.metrics(), found.to_dict()


def duplicates(ctx: Context) -> tuple:
    # Hashing keeps what it did every core.data.hashes.SAVE_EVERY images, so a stop loses little of it; the report
    # is kept beside the dataset (core.data.duplicates.kept) and with the job, for any page to read again.
    if ctx.dataset is None:
        raise UserError("The duplicate search needs a dataset saved on this server.")
    report = ctx.reporter("The duplicate search was stopped; a new one hashes only the images this one had not saved.")
    found = dups.find_duplicates(ctx.dataset, progress=lambda done, total: report("hashing", done, total),
                                 comparing=lambda done, total: report("comparing", done, total))  # fmt: skip
    metrics = {"images": found.images, "pairs": found.pairs_total, "leaks": found.leaks,
               "different_classes": found.different_classes}  # fmt: skip
    return COMPLETED, metrics, found.to_dict()
