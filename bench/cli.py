"""The benchmark's command line: pick a mode, run the scenarios, print the table, save JSON.

A scenario that fails is reported as an error in the table and the others still
run; the exit status is 1 then. A missed target is not a failure of the run (it
is what the table is for), so it does not change the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.loadgen import choose_generator
from bench.procs import ROOT, BenchError, stop_all
from bench.report import Scenario, machine, notes, table
from bench.settings import SCENARIOS, Settings, for_mode

RESULTS = ROOT / "bench" / "results"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark integrator against bare aiohttp baselines (loopback only).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="about a minute: shorter loads")
    mode.add_argument(
        "--smoke", action="store_true", help="a few seconds per scenario: checks that it runs"
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of measured load per phase (default 10, quick 3)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "latest.json",
        help="where to write the results (default bench/results/latest.json)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable)",
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk when installed)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the daemon with py-spy during measured phases (bench/results/profiles/)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where state, configs and logs go (default: a fresh directory in bench/results/)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def run_scenario(name: str, settings: Settings) -> Scenario:
    module = importlib.import_module(f"bench.scenarios.{name}")
    started = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {name}...", file=sys.stderr, flush=True)
    try:
        scenario: Scenario = module.run(settings)
    except (
        BenchError,
        OSError,
        RuntimeError,
        ValueError,
        KeyError,
        subprocess.SubprocessError,
    ) as err:
        scenario = Scenario(name, name, "-", error=f"{type(err).__name__}: {err}")
        traceback.print_exc()
    finally:
        stop_all()
    scenario.seconds = time.perf_counter() - started
    return scenario


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="run-", dir=RESULTS))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = for_mode(
        mode,
        duration=args.duration,
        workdir=workdir,
        generator=choose_generator(args.generator),
        profile=args.profile,
    )
    # SIGTERM (a CI timeout) should stop our children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    details = machine(workdir, settings.generator)
    scenarios: list[Scenario] = []
    try:
        for name in [s for s in SCENARIOS if not args.only or s in args.only]:
            scenarios.append(run_scenario(name, settings))
    finally:
        stop_all()
    elapsed = time.perf_counter() - started
    details["loadavg_end"] = os.getloadavg()

    print()
    print(table(scenarios))
    print()
    print(notes(scenarios))
    print(
        f"\n{mode} run, {elapsed:.0f}s; generator {settings.generator}; "
        f"event loop {'uvloop' if details['packages'].get('uvloop') else 'asyncio'} "
        "(daemon and baselines); "
        f"{details['cpu_model']} x{details['cpus']}, Python {details['python']}, "
        f"kernel {details['kernel']}; load average {details['loadavg_start'][0]:.1f} -> "
        f"{details['loadavg_end'][0]:.1f}"
    )
    output = {
        "mode": mode,
        "elapsed_seconds": elapsed,
        "machine": details,
        "settings": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(settings).items()
        },
        "scenarios": [scenario.to_json() for scenario in scenarios],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(output, indent=2) + "\n")
    print(f"results: {args.json}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(scenario.error for scenario in scenarios) else 0
