"""How long and how hard each scenario runs, per mode (full, ``--quick``, ``--smoke``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCENARIOS = ("ingest", "e2e", "chain", "backlog", "idle")


@dataclass(frozen=True)
class Settings:
    mode: str
    #: Seconds of measured load per phase (ingest, end to end).
    duration: float
    #: Seconds of unmeasured load before each measured phase (JIT-free Python still warms
    #: caches, connection pools and SQLite's page cache).
    warmup: float
    #: Messages in the store before the backlog restart.
    backlog: int
    #: Seconds the idle daemon is watched.
    idle: float
    #: Daemon starts timed for "start to READY" (median reported).
    ready_runs: int
    #: Seconds each in-process chain variant runs.
    chain_seconds: float
    #: The longest wait for queued work to be delivered after a load stops.
    drain_timeout: float
    workdir: Path
    generator: str
    connections: int = 64
    #: Record the daemon with py-spy during each measured phase.
    profile: bool = False
    #: Where py-spy's profiles go.
    profile_dir: Path | None = None
    #: Turns each server of the ingest scenario gets: the measured ``duration`` is split
    #: between them and the servers take turns, so drift in the machine's speed during
    #: the run falls on each alike.
    rounds: int = 1

    @property
    def scaled(self) -> bool:
        """Whether targets sized for the full run are scaled down (``--quick``, ``--smoke``)."""
        return self.mode != "full"


def for_mode(
    mode: str, *, duration: float | None, workdir: Path, generator: str, profile: bool = False
) -> Settings:
    """The settings of a mode; ``--duration`` overrides the load duration of any mode."""
    if mode == "smoke":
        base = Settings(mode, 1.0, 0.0, 300, 1.0, 1, 0.3, 15.0, workdir, generator, connections=16)
    elif mode == "quick":
        base = Settings(mode, 3.0, 0.5, 15_000, 8.0, 1, 0.7, 20.0, workdir, generator)
    else:
        base = Settings(mode, 10.0, 2.0, 100_000, 30.0, 3, 3.0, 60.0, workdir, generator, rounds=3)
    return Settings(
        mode=base.mode,
        duration=duration if duration is not None else base.duration,
        warmup=base.warmup,
        backlog=base.backlog,
        idle=base.idle,
        ready_runs=base.ready_runs,
        chain_seconds=base.chain_seconds,
        drain_timeout=base.drain_timeout,
        workdir=workdir,
        generator=generator,
        connections=base.connections,
        profile=profile,
        profile_dir=workdir.parent / "profiles" if profile else None,
        rounds=base.rounds,
    )
