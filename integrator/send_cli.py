"""``integrator send ROUTE``: inject a message into a running daemon's route.

For manual checks: the message goes through the admin API into the route's inbox,
is committed like any other, and follows the route's chain to its sinks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from integrator.errors import IntegratorError
from integrator.status_cli import admin_target, fetch


def add_send_command(commands: Any) -> argparse.ArgumentParser:
    help_text = "inject a message into a route of the running daemon"
    sub: argparse.ArgumentParser = commands.add_parser(
        "send", help=help_text, description=help_text
    )
    sub.add_argument("route", metavar="ROUTE")
    given = sub.add_mutually_exclusive_group()
    given.add_argument("--data", metavar="JSON", help="the body, as JSON")
    given.add_argument("--file", metavar="F", help="read the body (JSON) from a file")
    sub.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="a header (repeatable)"
    )
    sub.add_argument("--id", help="the message id (default: a new one)")
    sub.add_argument("-c", "--config", metavar="FILE", help="config whose [admin] to use")
    sub.add_argument("--url", help="the admin listener, e.g. http://127.0.0.1:8626")
    sub.set_defaults(handler=cmd_send)
    return sub


def _body(args: argparse.Namespace) -> Any:
    if args.data is not None:
        text, where = args.data, "--data"
    elif args.file is not None:
        try:
            text, where = Path(args.file).read_text(encoding="utf-8"), args.file
        except OSError as err:
            raise IntegratorError(f"--file {args.file}: {err.strerror}") from err
    else:
        text, where = sys.stdin.read(), "standard input"
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise IntegratorError(f"{where}: not valid JSON: {err}") from err


def cmd_send(args: argparse.Namespace) -> int:
    headers = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise IntegratorError(f"--header {item!r}: expected NAME=VALUE")
        headers[name] = value
    payload = {"body": _body(args), "headers": headers, "id": args.id}
    target = admin_target(args.config, args.url)
    answer = json.loads(
        fetch(target, f"/api/routes/{args.route}/send", json.dumps(payload).encode())
    )
    state = (
        "accepted" if answer["accepted"] else "already seen (dedupe window): not processed again"
    )
    print(f"{answer['route']}: message {answer['id']} {state}")
    return 0
