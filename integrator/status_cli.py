"""``integrator status``: the routes of a running daemon, read from its admin API.

Only the ``[admin]`` table of the config is read (the address and the token), so
the command works for an operator whose shell lacks the other routes' secrets.
``$INTEGRATOR_ADMIN_TOKEN`` overrides the token, for example where the config
reads it with ``${cred:…}`` and only systemd has the credential.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import msgspec

from integrator.admin.views import RouteView, StatusView
from integrator.config import AdminConfig, convert, find_config, resolve_references
from integrator.errors import ConfigError, IntegratorError

TOKEN_ENV = "INTEGRATOR_ADMIN_TOKEN"
TIMEOUT = 5.0


@dataclass
class AdminTarget:
    url: str  # http://127.0.0.1:8626
    token: str | None


def add_status_command(commands: Any) -> argparse.ArgumentParser:
    """Add ``status`` to the ``integrator`` sub-commands (``parser.add_subparsers()``)."""
    help_text = "routes of the running daemon: state, rates, breakers, queues, DLQ"
    sub: argparse.ArgumentParser = commands.add_parser(
        "status", help=help_text, description=help_text
    )
    sub.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file whose [admin] table says where the daemon listens (default: "
        "$INTEGRATOR_CONFIG, /etc/integrator/integrator.toml, ./config/integrator.toml)",
    )
    sub.add_argument("--url", help="the admin listener, e.g. http://127.0.0.1:8626 (overrides -c)")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=cmd_status)
    return sub


def cmd_status(args: argparse.Namespace) -> int:
    target = admin_target(getattr(args, "config", None), getattr(args, "url", None))
    body = fetch(target, "/api/status")
    if args.json:
        print(json.dumps(json.loads(body), indent=2, ensure_ascii=False))
        return 0
    try:
        status = msgspec.json.decode(body, type=StatusView)
    except msgspec.DecodeError as err:
        raise IntegratorError(f"unexpected answer from {target.url}/api/status: {err}") from err
    # Cut long errors to a terminal's width; leave piped output whole for grep.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 100_000
    print(render(status, width=width))
    return 0


# -- finding and calling the admin API --------------------------------------------------------


def admin_target(config_file: str | None, url: str | None = None) -> AdminTarget:
    """Where the admin API listens and the token to send, from ``[admin]`` of the config."""
    env_token = os.environ.get(TOKEN_ENV) or None
    if url:
        return AdminTarget(url.rstrip("/"), env_token)
    path = find_config(config_file)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError([f"{path}: cannot read config file: {err.strerror}"]) from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError([f"{path}: invalid TOML: {err}"]) from err
    raw = data.get("admin", {})
    if env_token is not None and isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k != "token"}  # do not resolve what we ignore
    problems: list[tuple[tuple[str | int, ...], str]] = []
    raw = resolve_references(raw, ("admin",), problems)
    if problems:
        hint = f" (or set ${TOKEN_ENV})" if any(p[0][-1:] == ("token",) for p in problems) else ""
        raise ConfigError([f"{path}: admin.{p[0][-1]}: {p[1]}{hint}" for p in problems])
    try:
        admin = convert(raw, AdminConfig)
    except msgspec.ValidationError as err:
        raise ConfigError([f"{path}: admin: {err}"]) from err
    if not admin.enabled:
        raise IntegratorError(
            f"{path}: [admin] enabled = false: the daemon runs no admin listener to ask"
        )
    from integrator.http.server import parse_listen

    host, port = parse_listen(admin.listen)
    if host in (None, "", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    token = env_token or (admin.token.reveal() if admin.token else None)
    return AdminTarget(f"http://{address}", token)


def fetch(target: AdminTarget, path: str, data: bytes | None = None) -> bytes:
    """GET (or, with ``data``, POST JSON to) an admin API path; turn every failure into
    an error an operator can act on."""
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(target.url + path, data=data, headers=headers)
    if target.token:
        request.add_header("Authorization", f"Bearer {target.token}")
    where = target.url.removeprefix("http://")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as err:
        detail = _problem_detail(err.read()) or err.reason
        if err.code == 401:
            raise IntegratorError(
                f"the admin API at {where} refused the token: check [admin] token "
                f"or ${TOKEN_ENV} ({detail})"
            ) from None
        raise IntegratorError(f"the admin API at {where} answered {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise IntegratorError(
            f"cannot reach the admin API at {where}: is the daemon running? ({reason})"
        ) from None


def _problem_detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("detail", "")) if isinstance(data, dict) else ""


# -- the table ------------------------------------------------------------------------------


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, (now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


COLUMNS = ("ROUTE", "STATE", "IN/s", "OUT/s", "QUEUE", "DLQ", "BREAKER", "LAST SUCCESS")
RIGHT = {"IN/s", "OUT/s", "QUEUE", "DLQ"}


def _cells(route: RouteView) -> list[str]:
    return [
        route.name,
        route.state if route.health in ("ok", route.state) else f"{route.state} ({route.health})",
        _rate(route.rate_in),
        _rate(route.rate_out),
        str(route.depth),
        str(route.dlq),
        (route.breaker or "-").replace("_", "-"),
        ago(route.last_success_at),
    ]


def render(status: StatusView, width: int = 120) -> str:
    """The header line, any reasons for unreadiness, and one table row per route."""
    state = "ready" if status.ready else "NOT READY"
    lines = [
        f"integrator {status.version}: {state}, up {ago(status.started_at).removesuffix(' ago')}, "
        f"{len(status.routes)} route(s), {status.dlq_total} dead letter(s)"
    ]
    lines += [f"  - {reason}" for reason in status.reasons]
    if not status.routes:
        return "\n".join([*lines, "no routes configured"])
    rows = [[*COLUMNS, "LAST ERROR"]]
    rows += [
        [*_cells(r), f"{ago(r.last_error_at)}: {r.last_error}" if r.last_error else "-"]
        for r in status.routes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines.append("")
    for row in rows:
        cells = [
            cell.rjust(w) if COLUMNS[i] in RIGHT else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        text = "  ".join(cells) + "  "
        room = max(20, width - len(text))
        error = row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"
        lines.append((text + error).rstrip())
    return "\n".join(lines)
