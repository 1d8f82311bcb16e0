"""python -m core serve | keys: the one server (pages and API), and the API keys that programs use.

python -m core serve --host 0.0.0.0 --port 8501
python -m core keys create RUN_ID --name "shop scanner" [--expires DAYS] [--store-predictions] [--all-runs]
python -m core keys list [--json]
python -m core keys revoke KEY_ID
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys

from core import settings
from core.cli.common import Command, Parser, iso, print_table
from core.util.errors import UserError
from core.workspace import access, keys


def add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s, every interface)")
    p.add_argument("--port", type=int, default=8501, help="port (default: %(default)s)")


def _check_port(host: str, port: int) -> None:
    """A port in use or not allowed is one sentence, before the server starts loading."""
    if not 0 < port < 65536:
        raise UserError(f"--port must be 1 to 65535 (it is {port}).")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"Port {port} is in use: stop what runs there or pick another with --port.") from None
            raise UserError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}).") from None


def run_serve(args) -> int:
    import uvicorn

    _check_port(args.host, args.port)
    print(f"serving the app on http://{args.host}:{args.port}/ and its API on /api/v1 (docs: /api/v1/docs)",
          file=sys.stderr, flush=True)  # fmt: skip
    # The application is the top-level server.py (Streamlit's ASGI app with the API mounted): core stays UI-free.
    uvicorn.run("server:app", host=args.host, port=args.port, app_dir=str(settings.ROOT), log_level="warning",
                access_log=False, proxy_headers=True, timeout_graceful_shutdown=5)  # fmt: skip
    return 0


def add_keys(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", required=True, parser_class=Parser)
    create = sub.add_parser("create", help="make a key for one run; it is printed once")
    create.add_argument("run", help="the run's id (its folder name in the runs folder)")
    create.add_argument("--name", required=True, help="who or what uses it, e.g. 'shop scanner'")
    create.add_argument("--expires", type=float, default=None, metavar="DAYS", help="it stops working after DAYS")
    create.add_argument("--store-predictions", action="store_true",
                        help="keep the images it sends in the run's dataset review queue")  # fmt: skip
    create.add_argument("--all-runs", action="store_true", help="for every run of this run's owner (admins only)")
    listing = sub.add_parser("list", help="the keys, their runs, state, last use and uses")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = sub.add_parser("revoke", help="stop a key at once")
    revoke.add_argument("key_id", help="the key's id, as `keys list` shows it")


def run_keys(args) -> int:
    if args.keys_command == "create":
        key, token = keys.create(args.run, access.OPERATOR, args.name, expires_days=args.expires,
                                 store=args.store_predictions, all_runs=args.all_runs)  # fmt: skip
        print(token)
        print(f"API key {key.id} for {key.scope}: shown once (only its hash is kept)"
              + (f"; it stops working in {args.expires:g} days" if args.expires else ""), file=sys.stderr)  # fmt: skip
    elif args.keys_command == "list":
        found = keys.list_keys(access.OPERATOR)
        if args.json:
            print(json.dumps([k.to_dict() for k in found], indent=2, ensure_ascii=False))
        elif not found:
            print("no API keys: `python -m core keys create RUN_ID --name NAME` makes one", file=sys.stderr)
        else:
            rows = [[k.id, k.name, k.run_id or "(all runs)", k.state, iso(k.created, " "),
                     iso(k.last_used, " ") if k.last_used else "never", str(k.uses), "yes" if k.store else ""]
                    for k in found]  # fmt: skip
            print_table(["id", "name", "run", "state", "created", "last used", "uses", "stores"], rows)
    else:
        key = keys.revoke(args.key_id, access.OPERATOR)
        print(f"API key {key.id} ({key.name}) revoked: it no longer works", file=sys.stderr)
    return 0


COMMANDS = (
    Command("serve", "start the server: the pages and the API (/api/v1) on one port", add_serve, run_serve),
    Command("keys", "make, list and revoke API keys (a key lets a program classify with one run)", add_keys, run_keys),
)
