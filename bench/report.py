"""Results: what a scenario reports, the targets it is judged by, the table and the JSON.

A scenario's result is a list of rows, each a metric measured for integrator and,
where it makes sense, for the baseline in the same run; the ratio between the two
is what travels between machines. A row may carry a :class:`Check` against the
target the issue sets, printed as PASS or MISS.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import ROOT


@dataclass
class Check:
    """``value op target``, e.g. a req/s ratio ``>= 0.65`` or a p99 ``<= 25`` ms."""

    value: float
    op: str
    target: float
    unit: str = ""
    #: True when the target was scaled to a smaller load (``--quick``, ``--smoke``).
    scaled: bool = False

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    @property
    def text(self) -> str:
        scaled = " (scaled)" if self.scaled else ""
        return f"{self.op} {fmt(self.target)}{self.unit}{scaled}"


@dataclass
class Row:
    metric: str
    value: float | None
    baseline: float | None = None
    unit: str = ""
    #: value / baseline, unless the row says otherwise (None: no ratio for this row).
    ratio: float | None = None
    check: Check | None = None

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline


@dataclass
class Scenario:
    key: str
    title: str
    baseline: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for row, raw in zip(self.rows, data["rows"], strict=True):
            if row.check is not None:
                raw["check"]["passed"] = row.check.passed
        return data


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(scenarios: list[Scenario]) -> str:
    """The one table: every row of every scenario, with its target and verdict."""
    header = ("scenario", "metric", "integrator", "baseline", "ratio", "target", "result")
    lines: list[tuple[str, ...]] = []
    for scenario in scenarios:
        if scenario.error:
            lines.append(
                (
                    scenario.title,
                    "FAILED: " + scenario.error.splitlines()[0][:70],
                    "",
                    "",
                    "",
                    "",
                    "ERROR",
                )
            )
            continue
        for index, row in enumerate(scenario.rows):
            unit = f" {row.unit}" if row.unit else ""
            check = row.check
            lines.append(
                (
                    scenario.title if index == 0 else "",
                    row.metric + unit,
                    fmt(row.value),
                    fmt(row.baseline),
                    fmt(row.ratio),
                    check.text if check else "",
                    ("PASS" if check.passed else "MISS") if check else "",
                )
            )
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = []
    for number, line in enumerate([header, *lines]):
        cells = [
            str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def notes(scenarios: list[Scenario]) -> str:
    out = []
    for scenario in scenarios:
        out.append(f"- {scenario.title}: baseline = {scenario.baseline}")
        out.extend(f"    {note}" for note in scenario.notes)
        if scenario.error:
            out.append(f"    error: {scenario.error}")
    return "\n".join(out)


# -- the machine ----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _filesystem(path: Path) -> str:
    """The file system type of the mount holding ``path`` (fsync costs depend on it)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def machine(workdir: Path, generator: str) -> dict[str, Any]:
    """What the numbers depend on, recorded next to them."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    wrk_version = ""
    if generator == "wrk":
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk_version = (
            (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""
        )
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "loadavg_start": os.getloadavg(),
        "filesystem": _filesystem(workdir),
        "generator": generator,
        "wrk": wrk_version,
        "git_commit": commit,
        "packages": {
            name: _version(name)
            for name in ("aiohttp", "anyio", "msgspec", "jsonschema", "jsonschema-rs", "uvloop")
        },
    }
