"""The benchmark still runs: ``bench/run.py --smoke`` on a tiny load produces numbers.

Speed is never asserted here (the machine may be busy; the benchmark itself judges
speed against its baselines). What is asserted is that every scenario ran, that
its measurements are real numbers, and that nothing acknowledged was lost.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("ingest", "e2e", "chain", "backlog", "idle")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--smoke",
            "--json",
            str(out),
            "--workdir",
            str(tmp / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    result["stdout"] = done.stdout
    return result


def _scenario(result: dict[str, Any], key: str) -> dict[str, Any]:
    found = [s for s in result["scenarios"] if s["key"] == key]
    assert found, f"scenario {key} missing from {[s['key'] for s in result['scenarios']]}"
    return found[0]


def _row(scenario: dict[str, Any], metric: str) -> dict[str, Any]:
    for row in scenario["rows"]:
        if row["metric"] == metric:
            return row
    raise AssertionError(f"{scenario['key']}: no row {metric!r}")


def test_every_scenario_ran_without_error(smoke: dict[str, Any]) -> None:
    assert [s["key"] for s in smoke["scenarios"]] == list(SCENARIOS)
    assert [s["error"] for s in smoke["scenarios"]] == [None] * len(SCENARIOS)


def test_every_measurement_is_a_finite_number(smoke: dict[str, Any]) -> None:
    for scenario in smoke["scenarios"]:
        for row in scenario["rows"]:
            for key in ("value", "baseline", "ratio"):
                value = row[key]
                assert value is None or math.isfinite(value), (scenario["key"], row)
            assert row["value"] is not None, (scenario["key"], row)


def test_load_scenarios_measured_both_sides(smoke: dict[str, Any]) -> None:
    ingest = _row(_scenario(smoke, "ingest"), "req/s")
    delivered = _row(_scenario(smoke, "e2e"), "delivered/s")
    for row in (ingest, delivered):
        assert row["value"] > 0 and row["baseline"] > 0 and row["ratio"] > 0
        assert row["check"] is not None and isinstance(row["check"]["passed"], bool)


def test_nothing_acknowledged_was_lost(smoke: dict[str, Any]) -> None:
    ingest = _scenario(smoke, "ingest")
    details = ingest["details"]
    assert details["stored_during_load"] >= details["integrator"]["ok"] > 0
    for where in ("thread", "process"):
        stored = details[f"stored_during_load_commit_on_{where}"]
        assert stored >= details[f"commit_on_{where}"]["ok"] > 0
    e2e = _scenario(smoke, "e2e")["details"]
    for daemon in ("integrator", "commit_on_thread", "commit_on_process"):
        assert e2e[daemon]["delivered"] >= e2e[daemon]["ok"] > 0
    backlog = _scenario(smoke, "backlog")["details"]
    assert backlog["drained"] and backlog["left"] == 0
    assert backlog["lines_written"] == backlog["messages"] > 0


def test_idle_and_machine_details_are_recorded(smoke: dict[str, Any]) -> None:
    idle = _scenario(smoke, "idle")
    assert _row(idle, "RSS")["value"] > 0
    assert 0 < _row(idle, "start to READY")["value"] < 30
    machine = smoke["machine"]
    for key in ("cpu_model", "cpus", "python", "kernel", "date", "generator"):
        assert machine[key], key


def test_the_table_is_printed(smoke: dict[str, Any]) -> None:
    for title in ("1 durable ingest", "2 end to end", "3 middleware chain", "4 backlog", "5 idle"):
        assert title in smoke["stdout"]
    assert "PASS" in smoke["stdout"] or "MISS" in smoke["stdout"]


@pytest.mark.parametrize("server", ["integrator", "ref", "bare", "e2e"])
def test_the_in_process_harness_runs(server: str) -> None:
    argv = ["-m", "bench.inprocess", "--server", server, "--requests", "300", "--warmup", "64"]
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    unit = "message delivered" if server == "e2e" else "request"
    found = re.match(rf"{server}: ([\d.]+) us CPU per {unit}", done.stdout)
    assert found is not None, done.stdout
    assert float(found.group(1)) > 0


@pytest.mark.parametrize(("scenario", "unit"), [("ingest", "req/s"), ("e2e", "delivered/s")])
def test_the_comparison_of_two_revisions_runs(scenario: str, unit: str) -> None:
    """``bench/compare.py`` against HEAD: both sides load and a ratio per pair is printed.

    The old side must run the exported tree: the script refuses to compare a tree with
    itself by accident, so an exit status of 0 also says the path check passed.
    """
    argv = ["-m", "bench.compare", "HEAD", "--scenario", scenario, "--pairs", "1"]
    argv += ["--seconds", "0.5", "--warmup", "0", "--connections", "4"]
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = re.findall(r"^\s+1\s+(old|new)\s+([\d,]+)\s", done.stdout, re.M)
    assert sorted(side for side, _ in rows) == ["new", "old"], done.stdout
    assert all(int(rate.replace(",", "")) > 0 for _, rate in rows), done.stdout
    assert re.search(rf"new / old \(HEAD\), per pair: {unit} [\d.]+", done.stdout), done.stdout
