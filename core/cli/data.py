"""python -m core inspect | datasets | cache: a dataset's report, the saved datasets and their versions, the feature
cache.

    python -m core datasets [--json]                   # the saved datasets, most recently used first
    python -m core datasets add ZIP [--name N]         # save a zip as a dataset; prints its id
    python -m core datasets versions ID [--json]       # its versions: number, when, who, counts, message
    python -m core datasets diff ID 1 2 [--json]       # what changed: added, removed, relabelled, per class
"""

from __future__ import annotations

import argparse
import json
import sys

from core.cli.common import (
    DATA_HELP,
    Command,
    Parser,
    add_limit_flags,
    bar_progress,
    iso,
    load,
    print_table,
)  # fmt: skip
from core.config import TrainConfig
from core.data.zips import Limits
from core.util.text import human_size
from core.workspace import access, datasets, records, versions


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
    dup = find_duplicates(ds, bar_progress("looking for duplicates", "img"),
                          comparing=bar_progress("comparing every pair", "pair"))  # fmt: skip
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
    sub = p.add_subparsers(dest="action", parser_class=Parser, metavar="{add,versions,diff}")
    add = sub.add_parser("add", help="save a zip as a dataset on this server (once per content) and print its id")
    add.add_argument("zip", help="the .zip file")
    add.add_argument("--name", default=None, help="the dataset's name (default: the zip's file name)")
    add.add_argument("--owner", default=access.GUEST, help="its owner's e-mail (default: none, everyone's)")
    d = Limits()
    add.add_argument("--max-entries", type=int, default=d.max_entries, help="most entries (default: %(default)s)")
    add.add_argument("--max-bytes", type=int, default=d.max_total_bytes, help="most bytes (default: %(default)s)")
    add.add_argument("--max-ratio", type=float, default=d.max_ratio, help="compression ratio (default: %(default)s)")
    listing = sub.add_parser("versions", help="a saved dataset's versions, oldest first")
    listing.add_argument("id", help="the saved dataset's id")
    listing.add_argument("--json", action="store_true", help="print the versions as JSON")
    diff = sub.add_parser("diff", help="what changed between two versions of a saved dataset, per class")
    diff.add_argument("id", help="the saved dataset's id")
    diff.add_argument("a", help="a version number (or latest)")
    diff.add_argument("b", help="another version number (or latest)")
    diff.add_argument("--json", action="store_true", help="print the changes as JSON")


def run_datasets(args) -> int:
    action = getattr(args, "action", None)
    if action is not None:
        return {"add": run_add, "versions": run_versions, "diff": run_diff}[action](args)
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


def run_add(args) -> int:
    limits = Limits(max_entries=args.max_entries, max_total_bytes=args.max_bytes, max_ratio=args.max_ratio)
    saved = datasets.save_zip(args.zip, args.name, args.owner, bar_progress("saving", "file"), limits)
    for name in saved.removed:
        print(f"removed the saved dataset {name} to make room", file=sys.stderr)
    print(f"{saved.name}: {saved.classes} classes, {saved.images} images, version 1", file=sys.stderr)
    print(saved.id)
    return 0


def run_versions(args) -> int:
    found = versions.versions(args.id, progress=bar_progress("hashing images, once", "img"))
    fraction = TrainConfig().validation_split
    new_val = {v.number: versions.new_validation(args.id, v.parent, v.number, fraction) for v in found if v.parent}
    if args.json:
        rows = [{"number": v.number, "parent": v.parent, "message": v.message, "author": v.author,
                 "created": iso(v.created), "images": len(v.entries), "counts": v.counts,
                 "new_validation": new_val.get(v.number)} for v in found]  # fmt: skip
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    header = ("version", "created", "by", "images", "classes", f"new val ({fraction:.0%})", "message")
    rows = [
        (str(v.number), iso(v.created, " "), access.display(v.author), str(len(v.entries)), str(len(v.classes)),
         "" if v.parent is None else f"{new_val[v.number]} since v{v.parent}", v.message)
        for v in found
    ]  # fmt: skip
    print_table(header, rows)
    return 0


def run_diff(args) -> int:
    newest = versions.newest(args.id).number
    a, b = (versions.parse_version(x) or newest for x in (args.a, args.b))
    d = versions.diff(args.id, a, b)
    per_class = d.per_class()
    if args.json:
        print(json.dumps({"a": a, "b": b, "summary": d.summary(), "per_class": per_class}, indent=2,
                         ensure_ascii=False))  # fmt: skip
        return 0
    print(d.summary())
    if per_class:
        rows = [(c, *(str(n[k]) for k in ("added", "removed", "relabelled_in", "relabelled_out")))
                for c, n in per_class.items()]  # fmt: skip
        print_table(("class", "added", "removed", "relabelled in", "relabelled out"), rows, indent="  ")
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
    Command(
        "datasets",
        "the datasets saved on this server (most recently used first); add a zip, list a dataset's versions, diff two",
        add_datasets,
        run_datasets,
    ),
    Command("cache", "show or clear the cache of decoded images and frozen-layer features", add_cache, run_cache),
)
