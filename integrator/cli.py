"""The command line. The only place errors become messages and exit codes.

Exit codes: 0 success, 1 runtime failure, 2 invalid config or usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from integrator import __version__
from integrator.config import Config, find_config, load_config
from integrator.errors import ConfigError, IntegratorError
from integrator.logs import setup_logging
from integrator.plugins import Registry, load_plugins
from integrator.types import Duration

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_INVALID
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    if args.handler is not cmd_run:
        # Commands report problems themselves; keep library warnings out of their output.
        setup_logging("error")
    try:
        code: int = args.handler(args)
        return code
    except ConfigError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    except IntegratorError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    finally:  # called in-process (tests, embedding): leave logging as it was
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="integrator",
        description="An async, plugin-based integration daemon.",
    )
    parser.add_argument("--version", action="version", version=f"integrator {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help="config file (default: $INTEGRATOR_CONFIG, /etc/integrator/integrator.toml, "
            "./config/integrator.toml)",
        )

    run = command("run", "run the daemon in the foreground (systemd runs this)", cmd_run)
    config_option(run)

    check = command(
        "check", "validate the config and the plugins it uses (exit 0 ok, 2 invalid)", cmd_check
    )
    config_option(check)

    test = command(
        "test", "run the route tests written in the config (exit 0 all pass, 1 any fail)", cmd_test
    )
    config_option(test)
    test.add_argument("--route", action="append", default=[], help="only this route (repeatable)")
    test.add_argument("-v", "--verbose", action="store_true", help="explain passing cases too")

    plugins = command(
        "plugins", "list installed plugins and the components they provide", cmd_plugins
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    audit = command("audit", "show the audit trail: reloads, admin actions, DLQ changes", cmd_audit)
    config_option(audit)
    audit.add_argument("--state-dir", help="use this state directory instead of the config's")
    audit.add_argument("--since", help="only newer than a duration ago ('1h') or an ISO date")
    audit.add_argument("--action", help="only this action (e.g. config.reload, dlq.replay)")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true")

    from integrator.status_cli import add_status_command

    add_status_command(commands)

    from integrator.send_cli import add_send_command

    add_send_command(commands)

    dlq = command("dlq", "list, show, replay or purge dead letters", None)
    dlq_commands = dlq.add_subparsers(title="dlq commands", metavar="ACTION")

    def dlq_command(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        sub = dlq_commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        config_option(sub)
        sub.add_argument("--state-dir", help="use this state directory instead of the config's")
        return sub

    listing = dlq_command("list", "list dead letters", cmd_dlq_list)
    listing.add_argument("--route", help="only this route")
    listing.add_argument("--since", help="only newer than a duration ago ('1h') or an ISO date")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")

    show = dlq_command("show", "show one dead letter with its message", cmd_dlq_show)
    show.add_argument("id", type=int)

    replay = dlq_command("replay", "put dead letters back into delivery", cmd_dlq_replay)
    replay.add_argument("ids", type=int, nargs="*", metavar="ID")
    replay.add_argument("--route", help="every dead letter of this route")
    replay.add_argument("--all", action="store_true", help="every dead letter")

    purge = dlq_command("purge", "delete dead letters for good", cmd_dlq_purge)
    purge.add_argument("ids", type=int, nargs="*", metavar="ID")
    purge.add_argument("--route", help="every dead letter of this route")
    purge.add_argument("--all", action="store_true", help="every dead letter")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def dlq_help(args: argparse.Namespace) -> int:
        dlq.print_help()
        return EXIT_INVALID

    dlq.set_defaults(handler=dlq_help)
    return parser


# -- run / check / plugins ----------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[Config, Any, Registry]:
    pm, registry = load_plugins()
    config = load_config(find_config(args.config), registry)
    return config, pm, registry


def cmd_run(args: argparse.Namespace) -> int:
    from integrator.engine.daemon import run_daemon

    setup_logging()
    pm, registry = load_plugins()
    config = load_config(find_config(args.config), registry)
    setup_logging(config.daemon.log_level, config.daemon.log_format)
    log = logging.getLogger("integrator")
    log.info("integrator %s starting with %s", __version__, config.path)
    for info in registry.failures:
        log.warning("plugin %s failed to load: %s", info.name, info.error)
    run_daemon(config, pm, registry)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    _, registry = load_plugins()
    path = find_config(args.config)
    for info in registry.failures:
        print(f"warning: plugin {info.name} failed to load: {info.error}", file=sys.stderr)
    config = load_config(path, registry)
    routes = len(config.routes)
    print(f"{path}: ok ({routes} route{'s' if routes != 1 else ''})")
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from integrator.routetest import run_route_tests

    if args.verbose:
        setup_logging("info")
    return run_route_tests(args.config, routes=args.route, verbose=args.verbose)


def cmd_plugins(args: argparse.Namespace) -> int:
    _, registry = load_plugins()
    infos = sorted(registry.plugins.values(), key=lambda i: (not i.builtin, i.name))
    if args.json:
        print(json.dumps([msgspec.to_builtins(info.__dict__) for info in infos], indent=2))
        return EXIT_OK
    for info in infos:
        version = info.version or ("built-in" if info.builtin else "")
        state = "" if info.status == "loaded" else f" [{info.status}]"
        print(f"{info.name} {version}{state}".rstrip())
        if info.error:
            print(f"    error: {info.error}")
        for kind, names in sorted(info.components.items()):
            print(f"    {kind}: {', '.join(sorted(names))}")
    return EXIT_OK


# -- dlq ------------------------------------------------------------------------------------


def _dlq_store(args: argparse.Namespace) -> Any:
    from integrator.engine.daemon import open_store

    _, registry = load_plugins()
    if args.state_dir:
        from integrator.delivery.sqlite import SQLiteStore

        return SQLiteStore(None, Path(args.state_dir))
    config = load_config(find_config(args.config), registry)
    return open_store(config, registry)


def cli_actor() -> str:
    """Who runs this command, for the audit trail."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} (cli)"


def _with_store(args: argparse.Namespace, action: Any) -> Any:
    async def go() -> Any:
        store = _dlq_store(args)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return anyio.run(go)


def _parse_since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return dt.datetime.now(dt.UTC).timestamp() - float(Duration.parse(text))
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise IntegratorError(
            f"--since: expected a duration like '1h' or an ISO date like "
            f"2026-01-31T12:00, found {text!r}"
        ) from err
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_dlq_list(args: argparse.Namespace) -> int:
    since = _parse_since(args.since)
    entries = _with_store(
        args, lambda s: s.dlq_list(route=args.route, since=since, limit=args.limit)
    )
    if args.json:
        print(json.dumps(msgspec.to_builtins(entries), indent=2))
        return EXIT_OK
    if not entries:
        print("no dead letters")
        return EXIT_OK
    print(f"{'ID':>6}  {'ROUTE':<20} {'SINK':<12} {'ATTEMPTS':>8}  {'FAILED AT':<20} LAST ERROR")
    for e in entries:
        print(
            f"{e.id:>6}  {e.route:<20} {e.sink or '(chain)':<12} {e.attempts:>8}  "
            f"{_when(e.failed_at):<20} {e.last_error[:80]}"
        )
    return EXIT_OK


def cmd_dlq_show(args: argparse.Namespace) -> int:
    entry = _with_store(args, lambda s: s.dlq_get(args.id))
    if entry is None:
        print(f"error: no dead letter with id {args.id}", file=sys.stderr)
        return EXIT_FAILURE
    data = msgspec.to_builtins(entry)
    data["first_attempt_at"] = _when(entry.first_attempt_at)
    data["failed_at"] = _when(entry.failed_at)
    if isinstance(entry.message.body, bytes):
        data["message"]["body"] = entry.message.body.decode("utf-8", "replace")
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    since = _parse_since(args.since)
    entries = _with_store(
        args, lambda s: s.audit_list(since=since, action=args.action, limit=args.limit)
    )
    if args.json:
        print(json.dumps(msgspec.to_builtins(entries), indent=2))
        return EXIT_OK
    if not entries:
        print("no audit entries")
        return EXIT_OK
    for e in entries:
        details = json.dumps(e.details, ensure_ascii=False, separators=(", ", "="))
        print(f"{_when(e.at)}  {e.action:<16} {e.actor:<32} {details}")
    return EXIT_OK


def _selection(args: argparse.Namespace, verb: str) -> list[int] | None:
    chosen = sum(bool(x) for x in (args.ids, args.route, args.all))
    if chosen != 1:
        raise IntegratorError(
            f"dlq {verb}: give dead-letter IDs, --route ROUTE or --all (one of them)"
        )
    return list(args.ids) if args.ids else None


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    ids = _selection(args, "replay")

    async def replay(store: Any) -> int:
        wanted = ids if ids is not None else await store.dlq_ids(route=args.route)
        done = 0
        show = sys.stderr.isatty() and len(wanted) > 100
        for start in range(0, len(wanted), 100):
            done += await store.dlq_replay(wanted[start : start + 100])
            if show:
                _progress(start + len(wanted[start : start + 100]), len(wanted))
        if show:
            print(file=sys.stderr)
        selection = {"ids": ids} if ids is not None else {"route": args.route, "all": args.all}
        await store.audit("dlq.replay", cli_actor(), {**selection, "count": done})
        return int(done)

    count = _with_store(args, replay)
    print(f"replayed {count} dead letter{'s' if count != 1 else ''}")
    return EXIT_OK


def _progress(done: int, total: int, width: int = 40) -> None:
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    ids = _selection(args, "purge")

    async def count(store: Any) -> int:
        if ids is not None:
            return len(ids)
        return int(await store.dlq_count(route=args.route))

    if not args.yes:
        total = _with_store(args, count)
        what = f"route {args.route}" if args.route else ("the listed ids" if ids else "ALL routes")
        if not sys.stdin.isatty():
            print(
                f"error: refusing to purge {total} dead letter(s) of {what} without --yes "
                "(no terminal to ask)",
                file=sys.stderr,
            )
            return EXIT_INVALID
        answer = input(f"Delete {total} dead letter(s) of {what} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged")
            return EXIT_OK

    async def purge(store: Any) -> int:
        count = int(await store.dlq_purge(ids, route=args.route))
        selection = {"ids": ids} if ids is not None else {"route": args.route, "all": args.all}
        await store.audit("dlq.purge", cli_actor(), {**selection, "count": count})
        return count

    purged = _with_store(args, purge)
    print(f"purged {purged} dead letter{'s' if purged != 1 else ''}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
