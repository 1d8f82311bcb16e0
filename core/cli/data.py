"""python -m core inspect | datasets | cache: a dataset's report, the saved datasets, the feature cache."""

from __future__ import annotations

import argparse
import json

from core.cli.common import (
    DATA_HELP,
    Command,
    add_limit_flags,
    bar_progress,
    iso,
    load,
    print_table,
)  # fmt: skip
from core.util.text import human_size
from core.workspace import records


def print_duplicates(dup, shown: int = 10) -> None:
    print("duplicates: " + " ".join(dup.summary()))
    for p in dup.pairs[:shown]:
        where = f"{p.class_a}" if p.class_a == p.class_b else f"{p.class_a} / {p.class_b}"
        if p.leak:
            where += f", {p.split_a} / {p.split_b}"
        print(f"  {p.relation}, {p.kind} (distance {p.distance}): {p.a}  {p.b}  ({where})")
    if dup.pairs_total > shown:
        print(f"  ... and {dup.pairs_total - min(shown, len(dup.pairs)):,} more pairs (--json lists {len(dup.pairs)})")


def add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_limit_flags(p)


def run_inspect(args) -> int:
    from core.data.duplicates import find_duplicates

    ds = load(args)
    r = ds.report
    dup = find_duplicates(ds, bar_progress("looking for duplicates", "img"))
    if args.json:
        print(json.dumps({**r.to_dict(), "duplicates": dup.to_dict()}, indent=2, ensure_ascii=False))
        return 0
    print(f"{r.source}: {len(r.classes)} classes, {r.total} images ({r.layout} layout)")
    splits = sorted({s for c in r.counts.values() for s in c})
    for cls in r.classes:
        print(f"  {cls:30s} " + "  ".join(f"{s} {r.counts[cls].get(s, 0):6d}" for s in splits))
    if r.image_sizes:
        s = r.image_sizes
        print(
            f"image sizes: width {s['min_width']}-{s['max_width']} (median {s['median_width']:g}), "
            f"height {s['min_height']}-{s['max_height']} (median {s['median_height']:g})"
        )
    for w in r.warnings:
        print(f"warning: {w}")
    if r.skipped:
        print(f"skipped {len(r.skipped)} files:")
        for s in r.skipped:
            print(f"  {s['file']}: {s['reason']}")
    if r.ignored:
        print(f"ignored {r.ignored} system files (__MACOSX, dot-files, Thumbs.db...)")
    print_duplicates(dup)
    return 0


def add_datasets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")


def run_datasets(args) -> int:
    found = records.list_datasets()
    if args.json:
        times = ("added", "last_used")
        rows = [{k: iso(v) if k in times else v for k, v in s.to_dict().items()} for s in found]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print(f"no saved datasets in {records.datasets_dir()}")
        return 0
    header = ("id", "name", "classes", "images", "size", "added", "by", "last used")
    rows = [
        (s.id, s.name, str(s.classes), str(s.images), human_size(s.bytes), iso(s.added, " "),
         s.added_by or "guest", iso(s.last_used, " "))
        for s in found
    ]  # fmt: skip
    print_table(header, rows)
    return 0


def add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clear", action="store_true", help="remove every cached entry")


def run_cache(args) -> int:
    from core.train.cache import ArrayCache

    cache = ArrayCache()
    if args.clear:
        print(f"cleared {cache.clear() / 1024**2:.1f} MB from {cache.root}")
    else:
        info = cache.info()
        print(f"{info['path']}: {info['entries']} entries, {info['bytes'] / 1024**2:.1f} MB "
              f"(limit {info['limit_bytes'] / 1024**2:.0f} MB)")  # fmt: skip
    return 0


COMMANDS = (
    Command("inspect", "check a dataset zip or folder and print its report", add_inspect, run_inspect),
    Command("datasets", "list the datasets saved on this server, most recently used first", add_datasets, run_datasets),
    Command("cache", "show or clear the cache of decoded images and frozen-layer features", add_cache, run_cache),
)
