"""What every subcommand shares: the one-line argument errors, TrainConfig's flags, datasets from a path or an id,
progress bars, tables."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from core.config import DEFAULT_LR, TrainConfig
from core.data.dataset import Dataset, load_dataset
from core.data.zips import Limits
from core.util.errors import UserError
from core.workspace import datasets, records, runs, versions

DATA_HELP = (
    "a .zip file, a folder of class folders, or the id of a dataset saved on this server, optionally with the "
    "version: ID@latest (the newest, as a bare ID) or ID@3"
)


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, its one-line help, its arguments, and what it does (returns the exit status)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in TrainConfig.describe():
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"] + " (default: %(default)s)"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif isinstance(f.default, tuple):  # a list of values: the flag once per value
            parser.add_argument(flag, action="append", metavar="PATH", help=f.metadata["help"] + " (default: none)")
        elif f.name == "learning_rate":  # its default depends on the optimizer, as on the Train page
            rates = ", ".join(f"{rate:g} for {name}" for name, rate in DEFAULT_LR.items())
            parser.add_argument(flag, type=float, default=None, help=f"{f.metadata['help']} (default: {rates})")
        else:
            kind = {"int": int, "float": float, "int | None": int}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=f.default, choices=f.metadata["choices"], help=help_text)


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    d = Limits()
    parser.add_argument(
        "--max-entries", type=int, default=d.max_entries, help="most entries a zip may hold (default: %(default)s)"
    )
    parser.add_argument(
        "--max-bytes", type=int, default=d.max_total_bytes, help="most bytes a zip may unpack to (default: %(default)s)"
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=d.max_ratio,
        help="highest compression ratio of one entry (default: %(default)s)",
    )
    parser.add_argument(
        "--work-dir", default=None, help="where zips are extracted (default: a temporary folder, removed afterwards)"
    )


def bar_progress(desc: str, unit: str):
    bar: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "b" not in bar:
            bar["b"] = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
        bar["b"].total = total
        bar["b"].update(done - bar["b"].n)
        if done >= total:
            bar["b"].close()
            del bar["b"]

    return update


def load(args):
    limits = Limits(max_entries=args.max_entries, max_total_bytes=args.max_bytes, max_ratio=args.max_ratio)
    data = args.data
    if getattr(args, "dataset_version", None) and "@" not in data and not Path(data).exists():
        data = f"{data}@{args.dataset_version}"  # --dataset-version N says what ID@N says
    return dataset_from(data, args.work_dir or args._tmp, limits)


def dataset_from(data: str, work_dir, limits: Limits | None = None) -> Dataset:
    """A zip or a folder, or, when no such path exists, a saved dataset: ``ID`` (its newest version), ``ID@latest``
    or ``ID@3`` (opened without a rescan).

    Raises:
        UnknownDataset, UnknownVersion: one line each.
        UserError: ``PATH@N`` for a zip or a folder, which have no versions.
    """
    if Path(data).exists():
        return load_dataset(data, work_dir, limits, bar_progress("reading dataset", "file"))
    name, at, version = data.rpartition("@")
    if at and records.is_id(name):
        number = versions.parse_version(version)
        return datasets.open_dataset(name, version=number, progress=bar_progress("hashing images, once", "img"))
    if at and Path(name).exists():
        raise UserError(
            f"{name} is a zip or a folder, which has no versions: save it with `python -m core datasets add {name}` "
            "and use the id it prints (ID@N)."
        )
    if records.is_id(data):
        return datasets.open_dataset(data, progress=bar_progress("hashing images, once", "img"))
    return load_dataset(data, work_dir, limits, bar_progress("reading dataset", "file"))


def config_from(args) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if values["learning_rate"] is None:
        values["learning_rate"] = DEFAULT_LR[values["optimizer"]]
    return TrainConfig(**values).validate()


def run_dir(run_id: str) -> Path:
    found = runs.find_run(run_id)
    if found is None:
        raise UserError(f"There is no run {run_id!r} in {runs.runs_dir()}: `python -m core jobs --all` lists them.")
    return found.path


def iso(seconds: float, sep: str = "T") -> str:
    return time.strftime(f"%Y-%m-%d{sep}%H:%M" + (":%S" if sep == "T" else ""), time.localtime(seconds))


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> None:
    """Columns as wide as their widest cell, left-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
