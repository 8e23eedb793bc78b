"""Durable ingest: this checkout against another revision, in alternating pairs.

::

    .venv/bin/python -m bench.compare HEAD~1                  # 3 pairs of 8 s, about 2 minutes
    .venv/bin/python -m bench.compare 51fdf1a --pairs 5 --seconds 10

For changes to waiting, threads or batching, which the in-process harness cannot
judge (docs/performance.md, "What the harness cannot show"). ``git archive`` puts the
revision's ``integrator`` package in a temporary directory, and that side's daemon
runs with the directory first on ``PYTHONPATH`` (checked before the first turn: a
comparison of a tree with itself shows nothing and looks like "no change").
Everything else (bench, venv, plugins) is this checkout's. One daemon at a time on
scenario 1's route, fresh state each turn, a warm-up, then the load; which side goes
first alternates, because going first or second alone moved a pair by about 10 %.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.daemon import start_daemon  # noqa: E402
from bench.loadgen import LoadResult, LoadSpec, choose_generator, run_load  # noqa: E402
from bench.procs import BenchError, Usage, UsageMeter, python, stop_all  # noqa: E402
from bench.scenarios.ingest import PATH, ingest_routes, signed_event  # noqa: E402


@dataclass
class Turn:
    side: str
    pair: int
    load: LoadResult
    usage: Usage

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.usage.cpu / self.load.ok if self.load.ok else 0.0


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


def turn(side: str, pair: int, env: dict[str, str], args: argparse.Namespace) -> Turn:
    workdir: Path = args.workdir
    daemon = start_daemon(f"{side}-{pair}", ingest_routes(workdir), workdir, env=env)
    try:
        body, headers = signed_event()
        spec = LoadSpec(daemon.url(PATH), headers, body.decode(), connections=args.connections)
        run_load(spec, args.warmup, args.generator, workdir / "load")
        with UsageMeter(daemon.pid) as meter:
            load = run_load(spec, args.seconds, args.generator, workdir / "load")
    finally:
        daemon.stop()
    return Turn(side, pair, load, meter.result)


def report(turns: list[Turn], rev: str) -> None:
    print(
        f"{'pair':>4}  {'side':<4}  {'req/s':>8}  {'p99 ms':>7}  {'CPU/req us':>10}  "
        f"{'server %':>8}  {'loop %':>6}  {'wake-ups/req':>12}"
    )
    for t in turns:
        wakeups = t.usage.wakeups / t.load.ok if t.load.ok else 0.0
        print(
            f"{t.pair + 1:>4}  {t.side:<4}  {t.load.ok_per_second:>8,.0f}  {t.load.p99_ms:>7.1f}  "
            f"{t.cpu_us_per_request:>10.1f}  {t.usage.cpu_percent:>8.0f}  "
            f"{t.usage.loop_percent:>6.0f}  {wakeups:>12.2f}"
        )
    by_pair: dict[int, dict[str, Turn]] = {}
    for t in turns:
        by_pair.setdefault(t.pair, {})[t.side] = t
    rates = [p["new"].load.ok_per_second / p["old"].load.ok_per_second for p in by_pair.values()]
    cpus = [p["new"].cpu_us_per_request / p["old"].cpu_us_per_request for p in by_pair.values()]
    print(
        f"\nnew / old ({rev}), per pair: req/s {', '.join(f'{r:.3f}' for r in rates)} "
        f"(mean {statistics.mean(rates):.3f}); CPU per request "
        f"{', '.join(f'{c:.3f}' for c in cpus)} (mean {statistics.mean(cpus):.3f})"
    )
    if min(rates) < 1 < max(rates):
        print("the pairs disagree on the direction of req/s: within this machine's noise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision to compare this checkout against")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured load per turn")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load per turn")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.generator = choose_generator(args.generator)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    args.workdir = Path(tempfile.mkdtemp(prefix="compare-", dir=results))
    try:
        old_root = args.workdir / "old"
        export(args.rev, old_root)
        sides = {"old": {"PYTHONPATH": str(old_root)}, "new": {}}
        for side, expected in (("old", old_root), ("new", ROOT)):
            found = imported_from(sides[side], args.workdir)
            if found.resolve() != expected.resolve():
                raise BenchError(f"the {side} side imports integrator from {found}, not {expected}")
        print(f"old = {args.rev} (from {old_root}), new = this checkout ({ROOT})")
        print(f"generator {args.generator}, {args.connections} connections, {args.seconds:g} s")
        turns = []
        for pair in range(args.pairs):
            for side in ("old", "new") if pair % 2 == 0 else ("new", "old"):
                turns.append(turn(side, pair, sides[side], args))
        report(turns, args.rev)
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
