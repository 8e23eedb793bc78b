"""Route tests: run a route's middleware chain on example messages, offline, and compare
what each sink would receive with what the operator wrote down.

Cases live in ``[[routes.NAME.tests]]`` tables of the config, or of ``<stem>.test.toml``
and ``<stem>.*.test.toml`` files beside it (``integrator.toml`` →
``integrator.test.toml``, ``integrator.orders.test.toml``). Sources and sinks are never
built: the input stands in for the source, and a capture stands in for every sink.
Nothing reaches the network (see :class:`OfflineHttpClients`). docs/route-tests.md
is the operator's guide.

"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from integrator.config import Config, find_config, load_config
from integrator.plugins import Registry, build_registry, get_plugin_manager
from integrator.routetest.cases import RouteCase, case_files, collect_cases
from integrator.routetest.judge import CaseResult, judge
from integrator.routetest.offline import InMemoryTestStore, NotAvailableInTests, OfflineHttpClients
from integrator.routetest.runner import Outcome, run_case

log = logging.getLogger("integrator.test")

EXIT_OK, EXIT_FAILED = 0, 1

__all__ = [
    "CaseResult",
    "InMemoryTestStore",
    "NotAvailableInTests",
    "OfflineHttpClients",
    "Outcome",
    "RouteCase",
    "case_files",
    "collect_cases",
    "judge",
    "run_case",
    "run_cases",
    "run_route_tests",
]


async def run_cases(
    cases: Sequence[RouteCase], config: Config, registry: Registry
) -> list[CaseResult]:
    results = []
    for case in cases:
        outcome = await run_case(case, config, registry)
        results.append(judge(case, config.routes[case.route], outcome))
    return results


def run_route_tests(
    config_path: str | Path | None = None,
    *,
    routes: Sequence[str] = (),
    verbose: bool = False,
    plugins: Sequence[Any] = (),
    out: TextIO | None = None,
) -> int:
    """``integrator test``: print PASS/FAIL per case and a summary; 0 if all pass, else 1.

    Raises ConfigError (exit 2 at the command line) for an invalid config or case.
    ``plugins`` are extra plugin objects, registered after the installed ones (tests).
    """
    out = out or sys.stdout
    pm, registry = get_plugin_manager()
    for plugin in plugins:
        pm.register(plugin)
    registry = build_registry(pm, registry)
    for info in registry.failures:
        print(f"warning: plugin {info.name} failed to load: {info.error}", file=sys.stderr)
    config = load_config(find_config(config_path), registry)
    cases = collect_cases(config, routes)
    results = anyio.run(run_cases, cases, config, registry)
    if verbose:
        tested = {case.route for case in cases}
        for name in routes or list(config.routes):
            if name not in tested:
                print(f"----  {name}: no test cases", file=out)
    for result in results:
        label = f"{result.case.route}/{result.case.name}"
        print(f"{'PASS' if result.passed else 'FAIL'} {label}", file=out)
        if verbose or not result.passed:
            for line in result.details:
                print(f"    {line}", file=out)
    failed = sum(not result.passed for result in results)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    return EXIT_FAILED if failed else EXIT_OK
