"""What several scenarios share: a measured load against one server process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.procs import Usage, UsageMeter
from bench.profiling import Profile
from bench.settings import Settings


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
) -> Measured:
    """Warm up, then load ``pid``'s server for ``settings.duration`` while metering it."""
    workdir = settings.workdir / "load"
    warmup_ok = 0
    if warmup and settings.warmup > 0:
        warmup_ok = run_load(spec, settings.warmup, settings.generator, workdir).ok
    recording = Profile(settings, pid, name, settings.duration) if profile else None
    with UsageMeter(pid) as meter:
        if recording is not None:
            with recording:
                load = run_load(spec, settings.duration, settings.generator, workdir)
        else:
            load = run_load(spec, settings.duration, settings.generator, workdir)
    return Measured(load, meter.result, recording.summary if recording else {}, warmup_ok)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of unsorted values (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
