"""This checkout against another revision, in alternating pairs (ingest or end to end).

::

    .venv/bin/python -m bench.compare HEAD~1                  # ingest: 3 pairs of 8 s, ~2 min
    .venv/bin/python -m bench.compare 51fdf1a --pairs 5 --seconds 10
    .venv/bin/python -m bench.compare HEAD~1 --scenario e2e   # end to end, delivered/s
    .venv/bin/python -m bench.compare HEAD --store commit_on=loop  # a store option, new side
    .venv/bin/python -m bench.compare HEAD --store commit_on=process --old-store commit_on=process

For changes to waiting, threads or batching, which the in-process harness cannot
judge (docs/performance.md, "What the harness cannot show"). ``git archive`` puts the
revision's ``integrator`` package in a temporary directory, and that side's daemon
runs with the directory first on ``PYTHONPATH`` (checked before the first turn: a
comparison of a tree with itself shows nothing and looks like "no change").
Everything else (bench, venv, plugins) is this checkout's. One daemon at a time on
the scenario's route (scenario 1's or 2's; end to end with the receiver of
``bench/servers.py``), fresh state each turn, a warm-up, then the load; which side
goes first alternates, because going first or second alone moved a pair by about 10 %.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.daemon import start_daemon  # noqa: E402
from bench.loadgen import LoadSpec, choose_generator  # noqa: E402
from bench.payloads import event_template  # noqa: E402
from bench.procs import BenchError, free_port, python, start, stop_all  # noqa: E402
from bench.scenarios import e2e, ingest  # noqa: E402
from bench.scenarios.common import measure  # noqa: E402
from bench.settings import for_mode  # noqa: E402


@dataclass
class Turn:
    """One side's measured load: the scenario's rate and what the server spent on it."""

    side: str
    pair: int
    #: Requests answered per second (ingest) or messages delivered per second (e2e).
    rate: float
    p99_ms: float
    cpu_us: float
    server_percent: float
    loop_percent: float


def export(rev: str, dest: Path) -> None:
    """``rev``'s ``integrator`` package, as committed, under ``dest``."""
    done = subprocess.run(
        ["git", "archive", "--format=tar", rev, "integrator"], cwd=ROOT, capture_output=True
    )
    if done.returncode != 0:
        raise BenchError(f"git archive {rev}: {done.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(dest, filter="data")


def imported_from(env: dict[str, str], cwd: Path) -> Path:
    """Where ``import integrator`` resolves with ``env`` added, as in the daemon (whose
    script's directory, not the checkout, comes first on its path: hence ``cwd``)."""
    code = "import integrator; print(integrator.__file__)"
    argv = [python(), "-c", code]
    environ = {**os.environ, **env}
    done = subprocess.run(argv, cwd=cwd, env=environ, capture_output=True, text=True, check=True)
    return Path(done.stdout.strip()).parent.parent


def store_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE in TOML (``commit_on=loop`` reads as a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def extra_config(side: str, args: argparse.Namespace) -> dict[str, Any]:
    """A side's store options: ``--store`` for the new, ``--old-store`` for the old
    (each side runs the defaults of its revision otherwise)."""
    options = args.store if side == "new" else args.old_store
    return {"store": {"options": dict(options)}} if options else {}


def ingest_turn(side: str, pair: int, env: dict[str, str], args: argparse.Namespace) -> Turn:
    workdir: Path = args.workdir
    routes = ingest.ingest_routes(workdir)
    daemon = start_daemon(
        f"{side}-{pair}", routes, workdir, env=env, extra=extra_config(side, args)
    )
    try:
        body, headers = ingest.signed_event()
        url = daemon.url(ingest.PATH)
        spec = LoadSpec(url, headers, body.decode(), connections=args.connections)
        measured = measure(args.settings, daemon.pid, spec, f"{side}-{pair}")
    finally:
        daemon.stop()
    load, usage = measured.load, measured.usage
    return Turn(
        side,
        pair,
        load.ok_per_second,
        load.p99_ms,
        measured.cpu_us_per_ok,
        usage.cpu_percent,
        usage.loop_percent,
    )


def e2e_turn(side: str, pair: int, env: dict[str, str], args: argparse.Namespace) -> Turn:
    workdir: Path = args.workdir
    target = f"{args.receiver.base}/in"
    concurrency = args.sink_concurrency if side == "new" else args.old_sink_concurrency
    routes = e2e.e2e_routes(target, concurrency or e2e.SINK_CONCURRENCY)
    daemon = start_daemon(
        f"{side}-{pair}", routes, workdir, env=env, extra=extra_config(side, args)
    )
    try:
        spec = LoadSpec(
            daemon.url(e2e.PATH),
            {"Content-Type": "application/json"},
            template=event_template(),
            connections=args.connections,
        )
        flow = e2e.saturate(args.settings, daemon.pid, spec, args.receiver, f"{side}-{pair}")
    finally:
        daemon.stop()
    loaded = flow.loaded
    return Turn(
        side,
        pair,
        flow.delivered_per_second,
        flow.p99_ms,
        flow.cpu_us_per_message,
        loaded.cpu_percent,
        loaded.loop_percent,
    )


def report(turns: list[Turn], rev: str, unit: str) -> None:
    print(
        f"{'pair':>4}  {'side':<4}  {unit:>12}  {'p99 ms':>7}  {'CPU/unit us':>11}  "
        f"{'server %':>8}  {'loop %':>6}"
    )
    for t in turns:
        print(
            f"{t.pair + 1:>4}  {t.side:<4}  {t.rate:>12,.0f}  {t.p99_ms:>7.1f}  "
            f"{t.cpu_us:>11.1f}  {t.server_percent:>8.0f}  {t.loop_percent:>6.0f}"
        )
    by_pair: dict[int, dict[str, Turn]] = {}
    for t in turns:
        by_pair.setdefault(t.pair, {})[t.side] = t
    rates = [p["new"].rate / p["old"].rate for p in by_pair.values() if p["old"].rate]
    cpus = [p["new"].cpu_us / p["old"].cpu_us for p in by_pair.values() if p["old"].cpu_us]
    print(
        f"\nnew / old ({rev}), per pair: {unit} {', '.join(f'{r:.3f}' for r in rates)} "
        f"(mean {statistics.mean(rates):.3f}); CPU per unit "
        f"{', '.join(f'{c:.3f}' for c in cpus)} (mean {statistics.mean(cpus):.3f})"
    )
    if min(rates) < 1 < max(rates):
        print(f"the pairs disagree on the direction of {unit}: within this machine's noise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision to compare this checkout against")
    parser.add_argument("--scenario", choices=("ingest", "e2e"), default="ingest")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured load per turn")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load per turn")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--store",
        type=store_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [store.options] setting for the new side only (repeatable)",
    )
    parser.add_argument(
        "--sink-concurrency", type=int, help="e2e: the new side's http sink concurrency"
    )
    parser.add_argument(
        "--old-sink-concurrency", type=int, help="e2e: the old side's http sink concurrency"
    )
    parser.add_argument(
        "--old-store",
        type=store_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [store.options] setting for the old side only (repeatable)",
    )
    args = parser.parse_args(argv)
    args.generator = choose_generator(args.generator)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    args.workdir = Path(tempfile.mkdtemp(prefix="compare-", dir=results))
    args.settings = replace(
        for_mode("quick", duration=args.seconds, workdir=args.workdir, generator=args.generator),
        warmup=args.warmup,
    )
    try:
        old_root = args.workdir / "old"
        export(args.rev, old_root)
        sides = {"old": {"PYTHONPATH": str(old_root)}, "new": {}}
        for side, expected in (("old", old_root), ("new", ROOT)):
            found = imported_from(sides[side], args.workdir)
            if found.resolve() != expected.resolve():
                raise BenchError(
                    f"the {side} side imports integrator from {found}, not {expected}: "
                    "unset PYTHONPATH, and run this script from the checkout's .venv"
                )
        new_options = ", ".join(f"{k} = {v!r}" for k, v in args.store)
        old_options = ", ".join(f"{k} = {v!r}" for k, v in args.old_store)
        print(
            f"old = {args.rev} (from {old_root})"
            + (f" with [store.options] {old_options}" if old_options else "")
            + f", new = this checkout ({ROOT})"
            + (f" with [store.options] {new_options}" if new_options else "")
        )
        print(
            f"{args.scenario}: generator {args.generator}, {args.connections} connections, "
            f"{args.seconds:g} s per turn after {args.warmup:g} s of warm-up"
        )
        if args.scenario == "e2e":
            port = free_port()
            receiver_argv = [python(), "-m", "bench.servers", "receiver", "--port", str(port)]
            start("receiver", receiver_argv, args.workdir)
            args.receiver = e2e.Receiver(port)
        measure = e2e_turn if args.scenario == "e2e" else ingest_turn
        turns = []
        for pair in range(args.pairs):
            for side in ("old", "new") if pair % 2 == 0 else ("new", "old"):
                turns.append(measure(side, pair, sides[side], args))
        report(turns, args.rev, "delivered/s" if args.scenario == "e2e" else "req/s")
        return 0
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        if args.keep:
            print(f"work directory kept: {args.workdir}")
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
