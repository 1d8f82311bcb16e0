"""The command line, ``python -m core``: the subcommands as a table, each in the module of its kind of work.

    python -m core inspect DATA.zip [--json]
    python -m core datasets [--json]                  # the datasets saved on this server (by the app)
    python -m core jobs [--json] [--all]              # queued, running and recently finished jobs
    python -m core train DATA.zip --out runs/ants --weights none --image-size 64 --epochs 2
    python -m core predict runs/ants photo1.jpg photo2.png --top-k 3 [--json]
    python -m core predict runs/ants photo.jpg --explain heatmaps/ [--explain-class ants]
    python -m core evaluate runs/ants [DATA.zip] --top-k 3 [--json]
    python -m core label-issues runs/ants [--folds 5] [--json]   # suspected label errors (cleanlab)
    python -m core export runs/ants --format all --out exports/ [--int8]   # SavedModel, LiteRT, ONNX + parity
    python -m core train 3f2a9c0d41b7e655 --epochs 2  # a saved dataset's id works wherever DATA.zip does
    python -m core train 3f2a9c0d41b7e655@2           # ... and one of its versions (@latest: the newest)
    python -m core retrain RUN --newest               # the run's settings again, on its dataset's newest version
    python -m core datasets add DATA.zip [--name N]; datasets versions ID; datasets diff ID 1 2
    python -m core lr-find DATA.zip --weights none --image-size 64 --optimizer adam
    python -m core bakeoff DATA.zip [--backbones a,b,c] [--int8] [--image-size N] [--weights imagenet|none] [--json]
    python -m core share RUN [--expires DAYS]; python -m core unshare RUN
    python -m core serve [--host H] [--port P]       # the pages and the API (/api/v1) on one port
    python -m core keys create RUN --name NAME [--expires DAYS] [--store-predictions]; keys list; keys revoke ID
    python -m core cache [--clear]
    python -m core speed --image-size 96 [--precision auto]

Exit status 0 on success, 2 on a user error (one line on stderr), 130 when interrupted; export exits 1 when an
export misses its parity target (the bundle is written and says so).
Ctrl-C during training stops after the current batch and saves the model trained so far; a second Ctrl-C aborts.
A new subcommand is a ``Command`` in the module of its kind (``core.cli.data``, ``training``, ``results``,
``publish``, ``bakeoff``, ``jobs``) and a place in ``ORDER``. TensorFlow loads inside a command, once its cheap checks
passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from core.cli import bakeoff, data, jobs, publish, results, serving, training
from core.cli.common import Parser
from core.util.errors import Cancelled, UserError

COMMANDS = {c.name: c for m in (data, training, results, publish, bakeoff, jobs, serving) for c in m.COMMANDS}
# The order of `python -m core --help`: the common path first.
ORDER = ("serve", "inspect", "train", "retrain", "predict", "evaluate", "lr-find", "bakeoff", "label-issues", "export",
         "share", "unshare", "keys", "datasets", "jobs", "cache", "speed")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m core", description="Make your own image classifier: VGG16 transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in ORDER:
        command = COMMANDS[name]
        command.add_arguments(sub.add_parser(name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="classifier-") as tmp:
        args._tmp = tmp
        try:
            return COMMANDS[args.command].run(args)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Cancelled as exc:
            print(str(exc), file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
