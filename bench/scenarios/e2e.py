"""Scenario 2: end to end, webhook in -> filter, map, validate -> HTTP sink -> receiver.

Every request carries a sequence number and its send time (filled in by the load
generator); the loopback receiver records when each one arrives, so latency is
send-to-arrival across the whole path (HTTP in, durable commit, the chain, the
outbox, HTTP out) and duplicates are counted by sequence number.

Two phases per server. **Saturation**: closed-loop load at ``connections``;
"delivered/s" counts arrivals at the receiver while the load runs (the first
quarter-second to second skipped), then the rest is left to drain. **Latency**:
open-loop load at half the daemon's saturated delivery rate ("below saturation"),
p50/p99 of send-to-arrival. The baseline is a bare aiohttp relay that decodes the
JSON and POSTs it to the same receiver before answering: HTTP in, HTTP out,
nothing durable, no transforms.

Two more daemons, with ``[store.options] commit_on = "thread"`` and ``"process"``
(the default, ``"auto"``, moves from the one to the other under load), are
saturated after the first, with the same route.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any

from bench.daemon import get_json, post, start_daemon, wait_until
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.payloads import FILTER, MAP, VALIDATE, event_template
from bench.procs import Usage, UsageMeter, free_port, python, start
from bench.profiling import Profile
from bench.report import Check, Scenario
from bench.scenarios.common import COMMIT_ON, percentile
from bench.settings import Settings

PATH = "/hooks/e2e"
#: In-flight deliveries of the daemon's http sink (the default is 8).
SINK_CONCURRENCY = 16

#: Targets from the issue.
DELIVERED_PER_SECOND = 5000.0
P99_MS = 100.0


class Receiver:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def reset(self) -> None:
        post(self.base + "/reset")

    def count(self) -> int:
        return int(get_json(self.base + "/count")["count"])

    def records(self) -> dict[str, list[Any]]:
        result: dict[str, list[Any]] = get_json(self.base + "/records", timeout=30)
        return result


@dataclass
class Flow:
    """One phase against one server, as seen by the generator and the receiver."""

    load: LoadResult
    #: From the start of the load until drained.
    usage: Usage
    #: While the load ran.
    loaded: Usage
    delivered: int
    duplicates: int
    #: Deliveries per second while the load ran.
    delivered_per_second: float
    #: Seconds after the load stopped until every acknowledged message arrived.
    drain_seconds: float | None
    p50_ms: float
    p99_ms: float
    profile: dict[str, Any]

    @property
    def cpu_us_per_message(self) -> float:
        """Server CPU from the start of the load until drained, per message delivered."""
        return 1e6 * self.usage.cpu / self.delivered if self.delivered else 0.0


def run(settings: Settings) -> Scenario:
    scenario = Scenario(
        "e2e",
        "2 end to end",
        "bare aiohttp relay (own process): read, decode JSON, POST to the receiver, answer 202",
    )
    workdir = settings.workdir
    receiver_port, relay_port = free_port(), free_port()
    argv = [python(), "-m", "bench.servers"]
    receiver = start("receiver", [*argv, "receiver", "--port", str(receiver_port)], workdir)
    try:
        recv = Receiver(receiver_port)
        target = f"{recv.base}/in"
        relay = start(
            "relay",
            [*argv, "relay", "--port", str(relay_port), "--target", target,
             "--connections", str(settings.connections)],
        workdir)  # fmt: skip
        headers = {"Content-Type": "application/json"}
        template = event_template()
        relay_spec = LoadSpec(
            f"http://127.0.0.1:{relay_port}{PATH}", headers, template=template,
            connections=settings.connections,
        )  # fmt: skip
        base = saturate(settings, relay.pid, relay_spec, recv, "e2e-baseline")
        daemon = start_daemon("e2e", e2e_routes(target), workdir)
        try:
            spec = replace(relay_spec, url=daemon.url(PATH))
            ours = saturate(settings, daemon.pid, spec, recv, "e2e", profile=True)
            rate = max(20.0, round(0.5 * ours.delivered_per_second, -1))
            ours_paced = paced(settings, daemon.pid, replace(spec, rate=rate), recv)
        finally:
            daemon.stop()
        options: dict[str, Flow] = {}
        routes = e2e_routes(target)
        for where, config in COMMIT_ON.items():
            daemon = start_daemon(f"e2e-{where}", routes, workdir, extra=config)
            try:
                options[where] = saturate(
                    settings, daemon.pid, replace(spec, url=daemon.url(PATH)), recv, f"e2e-{where}"
                )
            finally:
                daemon.stop()
        base_paced = None
        if settings.mode != "smoke":
            base_paced = paced(settings, relay.pid, replace(relay_spec, rate=rate), recv)
        relay.stop()
    finally:
        receiver.stop()

    delivered = scenario.add("delivered/s", ours.delivered_per_second, base.delivered_per_second)
    delivered.check = Check(ours.delivered_per_second, ">=", DELIVERED_PER_SECOND, "/s")
    scenario.add("ingest req/s (saturated)", ours.load.ok_per_second, base.load.ok_per_second)
    scenario.add("latency p99 (saturated)", ours.p99_ms, base.p99_ms, "ms")
    scenario.add("latency p50 @ rate", ours_paced.p50_ms, base_paced and base_paced.p50_ms, "ms")
    p99 = scenario.add(
        "latency p99 @ rate", ours_paced.p99_ms, base_paced and base_paced.p99_ms, "ms"
    )
    p99.check = Check(ours_paced.p99_ms, "<=", P99_MS, " ms")
    scenario.add(
        "server CPU (saturated)", ours.loaded.cpu_percent, base.loaded.cpu_percent, "% core"
    )
    scenario.add(
        "event loop thread CPU", ours.loaded.loop_percent, base.loaded.loop_percent, "% core"
    )
    scenario.add("CPU per message", ours.cpu_us_per_message, base.cpu_us_per_message, "us")
    rss = scenario.add("RSS peak", ours.usage.rss_peak_mb, base.usage.rss_peak_mb, "MB")
    rss.ratio = None
    labels = {where: f'commit_on = "{where}"' for where in options}
    for where, flow in options.items():
        on = labels[where]
        scenario.add(f"{on}: delivered/s", flow.delivered_per_second, base.delivered_per_second)
        scenario.add(f"{on}: p99 (saturated)", flow.p99_ms, base.p99_ms, "ms")
        scenario.add(f"{on}: CPU/message", flow.cpu_us_per_message, base.cpu_us_per_message, "us")
    scenario.notes.append(
        f"generator {ours.load.generator} at {settings.connections} connections for saturation; "
        f"latency @ rate = open loop at {rate:g} msg/s (half the saturated delivery rate), "
        f"python generator; http sink concurrency {SINK_CONCURRENCY}"
    )
    flows = [
        ("integrator", ours),
        ("integrator @ rate", ours_paced),
        *((labels[where], flow) for where, flow in options.items()),
    ]
    for name, flow in flows:
        lost = flow.load.ok - flow.delivered
        drained = (
            f"drained {flow.drain_seconds:.1f}s after the load"
            if flow.drain_seconds is not None
            else f"NOT drained within {settings.drain_timeout:g}s"
        )
        scenario.notes.append(
            f"{name}: {flow.load.ok} acknowledged, {flow.delivered} delivered"
            f"{f', {lost} MISSING' if lost > 0 else ''}, {flow.duplicates} duplicates; {drained}"
        )
    scenario.details = {
        "rate": rate,
        "integrator": _details(ours),
        "integrator_at_rate": _details(ours_paced),
        **{f"commit_on_{where}": _details(flow) for where, flow in options.items()},
        "baseline": _details(base),
        "baseline_at_rate": _details(base_paced) if base_paced else None,
    }
    return scenario


def e2e_routes(target: str, concurrency: int = SINK_CONCURRENCY) -> dict[str, Any]:
    """The daemon's route: webhook in, filter, map, validate, then the http sink."""
    return {
        "e2e": {
            "middleware": [FILTER, MAP, VALIDATE],
            "sinks": [{"type": "http", "url": target, "concurrency": concurrency}],
            "source": {"type": "webhook", "path": PATH},
        }
    }


def saturate(
    settings: Settings,
    pid: int,
    spec: LoadSpec,
    recv: Receiver,
    name: str,
    *,
    profile: bool = False,
) -> Flow:
    """Closed-loop load after a drained warm-up; delivery rate while it runs."""
    workdir = settings.workdir / "load"
    if settings.warmup > 0:
        recv.reset()
        warm = run_load(spec, settings.warmup, settings.generator, workdir)
        wait_until(lambda: recv.count() >= warm.ok, settings.drain_timeout, 0.2)
    return _phase(settings, pid, spec, recv, name if profile else None)


def paced(settings: Settings, pid: int, spec: LoadSpec, recv: Receiver) -> Flow:
    """Open-loop load at ``spec.rate`` (always the Python generator)."""
    return _phase(settings, pid, spec, recv, None)


def _phase(
    settings: Settings, pid: int, spec: LoadSpec, recv: Receiver, profile: str | None
) -> Flow:
    recv.reset()
    recording = Profile(settings, pid, profile or "", settings.duration) if profile else None
    t0 = time.time()
    # Metered until the work is drained, so CPU per message covers ingest and delivery;
    # the inner meter covers the load alone: how busy the server's threads were.
    with UsageMeter(pid) as meter:
        with UsageMeter(pid) as loaded, recording or contextlib.nullcontext():
            load = run_load(spec, settings.duration, settings.generator, settings.workdir / "load")
        t1 = time.time()
        drained = wait_until(lambda: recv.count() >= load.ok, settings.drain_timeout, 0.1)
        drain_seconds = time.time() - t1 if drained else None
        wait_until(_settled(recv), 2.0, 0.3)  # requests in flight when the generator stopped
    records = recv.records()
    # Records sent before t0 belong to the warm-up (stragglers still in flight then).
    phase = [
        (seq, sent, arrived)
        for seq, sent, arrived in zip(
            records["seq"], records["sent_at"], records["arrived_at"], strict=True
        )
        if sent >= t0
    ]
    unique = len({seq for seq, _, _ in phase})
    skip = min(1.0, settings.duration / 4)
    window = [arrived for _, _, arrived in phase if t0 + skip <= arrived <= t1]
    latencies = [arrived - sent for _, sent, arrived in phase]
    return Flow(
        load=load,
        usage=meter.result,
        loaded=loaded.result,
        delivered=unique,
        duplicates=len(phase) - unique,
        delivered_per_second=len(window) / max(1e-9, t1 - t0 - skip),
        drain_seconds=drain_seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        profile=recording.summary if recording else {},
    )


def _settled(recv: Receiver) -> Any:
    last = [-1]

    def check() -> bool:
        now = recv.count()
        settled = now == last[0]
        last[0] = now
        return settled

    return check


def _details(flow: Flow | None) -> dict[str, Any] | None:
    if flow is None:
        return None
    return {
        "ok": flow.load.ok,
        "errors": flow.load.errors,
        "seconds": flow.load.seconds,
        "delivered": flow.delivered,
        "duplicates": flow.duplicates,
        "drain_seconds": flow.drain_seconds,
        "cpu_seconds": flow.usage.cpu,
        "loaded_cpu_seconds": flow.loaded.cpu,
        "loaded_loop_cpu_seconds": flow.loaded.loop_cpu,
        "rss_peak_mb": flow.usage.rss_peak_mb,
        "profile": flow.profile,
    }
