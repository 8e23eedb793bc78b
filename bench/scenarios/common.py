"""What several scenarios share: a measured load against one server process."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.procs import Usage, UsageMeter
from bench.profiling import Profile
from bench.settings import Settings

#: The store's options measured beside the default (``"auto"``) in scenarios 1 and 2,
#: each in a daemon of its own: where commits run (docs/configuration.md,
#: ``commit_on``): always on the writer thread, always in the writer process.
COMMIT_ON: dict[str, dict[str, Any]] = {
    where: {"store": {"options": {"commit_on": where}}} for where in ("thread", "process")
}


@dataclass
class Measured:
    load: LoadResult
    usage: Usage
    profile: dict[str, Any]
    #: Requests answered 2xx during the warm-up (not measured, but sent).
    warmup_ok: int = 0

    @property
    def cpu_us_per_ok(self) -> float:
        """Server CPU per successful request: independent of how busy the machine is."""
        return 1e6 * self.usage.cpu / self.load.ok if self.load.ok else 0.0


def measure(
    settings: Settings,
    pid: int,
    spec: LoadSpec,
    name: str,
    *,
    warmup: bool = True,
    profile: bool = False,
    seconds: float | None = None,
) -> Measured:
    """Warm up, then load ``pid``'s server for ``seconds`` (default: the settings'
    duration) while metering it."""
    workdir = settings.workdir / "load"
    duration = settings.duration if seconds is None else seconds
    warmup_ok = 0
    if warmup and settings.warmup > 0:
        warmup_ok = run_load(spec, settings.warmup, settings.generator, workdir).ok
    recording = Profile(settings, pid, name, duration) if profile else None
    with UsageMeter(pid) as meter:
        if recording is not None:
            with recording:
                load = run_load(spec, duration, settings.generator, workdir)
        else:
            load = run_load(spec, duration, settings.generator, workdir)
    return Measured(load, meter.result, recording.summary if recording else {}, warmup_ok)


def measure_in_turns(
    settings: Settings,
    servers: dict[str, tuple[int, LoadSpec]],
    *,
    profile: tuple[str, str] | None = None,
) -> dict[str, Measured]:
    """Load each server in turn, ``settings.rounds`` times, the order rotating each round.

    On a shared host the machine's speed drifts over a run; in turns, each server
    gets its share of the fast and the slow moments instead of one server getting
    all of one. Each server warms up once, first. ``profile`` is (server, file name):
    the server to record with py-spy during its first turn. Throughput, CPU and
    errors add up over the turns; p50 is the median of the turns', p99 and RSS the
    highest (one slow turn is enough to miss a latency target).
    """
    names = list(servers)
    workdir = settings.workdir / "load"
    warmed = {name: 0 for name in names}
    if settings.warmup > 0:
        for name, (_, spec) in servers.items():
            warmed[name] = run_load(spec, settings.warmup, settings.generator, workdir).ok
    turns: dict[str, list[Measured]] = {name: [] for name in names}
    seconds = settings.duration / settings.rounds
    for turn in range(settings.rounds):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            pid, spec = servers[name]
            record = profile is not None and name == profile[0] and turn == 0
            label = profile[1] if record and profile is not None else name
            turns[name].append(
                measure(settings, pid, spec, label, warmup=False, profile=record, seconds=seconds)
            )
    return {name: _combined(turns[name], warmed[name]) for name in names}


def _combined(parts: list[Measured], warmup_ok: int) -> Measured:
    loads = [part.load for part in parts]
    usages = [part.usage for part in parts]
    load = LoadResult(
        generator=loads[0].generator,
        seconds=sum(load.seconds for load in loads),
        requests=sum(load.requests for load in loads),
        ok=sum(load.ok for load in loads),
        errors=sum(load.errors for load in loads),
        p50_ms=statistics.median(load.p50_ms for load in loads),
        p99_ms=max(load.p99_ms for load in loads),
    )
    usage = Usage(
        seconds=sum(usage.seconds for usage in usages),
        cpu=sum(usage.cpu for usage in usages),
        rss_peak_mb=max(usage.rss_peak_mb for usage in usages),
        hwm_mb=max(usage.hwm_mb for usage in usages),
        wakeups=sum(usage.wakeups for usage in usages),
        loop_cpu=sum(usage.loop_cpu for usage in usages),
    )
    profile = next((part.profile for part in parts if part.profile), {})
    return Measured(load, usage, profile, warmup_ok)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of unsorted values (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
