"""Prometheus metrics, read from the engine's own counters at scrape time.

One :class:`DaemonCollector` per daemon in its own ``CollectorRegistry`` (never the
global one: two daemons in one test process must not share numbers). It keeps no
metric objects of its own: each scrape reads the route stats, the health board,
the breaker and limiter registries and the :class:`~integrator.admin.sampler.Sampler`,
so the engine pays nothing per message for being measured.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from integrator import __version__
from integrator.admin.sampler import Sampler
from integrator.delivery.breaker import BreakerMiddleware, BreakerRegistry
from integrator.delivery.limits import LimiterRegistry
from integrator.engine.stats import OPS_STATS, Histogram, OpsStats

if TYPE_CHECKING:
    from integrator.engine.daemon import Daemon

#: ``integrator_breaker_state`` values.
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def build_registry(daemon: Daemon, sampler: Sampler) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon, sampler))
    ProcfsProcessCollector(registry=registry)
    # The store's writer process (commit_on = "auto" under load, or "process"): the
    # same figures, as integrator_store_writer_process_*, while it runs.
    ProcfsProcessCollector(
        namespace="integrator_store_writer", pid=lambda: _store_helper(daemon), registry=registry
    )
    return registry


class ProcfsProcessCollector(ProcessCollector):
    """``process_*`` metrics that need only the process's own ``/proc/<pid>`` files.

    Why: prometheus_client reads the boot time from ``/proc/stat`` and reports
    nothing at all without it, and the systemd unit's ``ProcSubset=pid`` hides that
    file. The boot time is also the wall clock less the time since boot.
    """

    def _boot_time(self) -> float:
        try:
            boot_time: float = super()._boot_time()
            return boot_time
        except OSError:
            return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def _store_helper(daemon: Daemon) -> int | str:
    """The store's own process, or a name /proc has none of (then nothing is reported)."""
    services = daemon.services
    pid = None if services is None else services.store.helper_pid()
    return "no-such-process" if pid is None else pid


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.sum)


class DaemonCollector(Collector):
    def __init__(self, daemon: Daemon, sampler: Sampler) -> None:
        self.daemon = daemon
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        services = self.daemon.services
        info = InfoMetricFamily("integrator", "The running integrator version.")
        info.add_metric([], {"version": __version__})
        yield info
        if services is None:
            return
        yield from self._routes(services.stats)
        yield from self._queues()
        yield from self._components()
        yield from self._breakers(services.shared.get("breakers"))
        yield from self._limiters(services.shared.get("limiters"))
        ops = services.shared.get(OPS_STATS)
        yield from self._ops(ops if isinstance(ops, OpsStats) else OpsStats())
        pending = GaugeMetricFamily(
            "integrator_store_pending", "Inbox items and deliveries waiting in the store."
        )
        pending.add_metric([], services.store.pending())
        yield pending

    def _routes(self, stats: dict[str, Any]) -> Iterator[Metric]:
        route_counters = {
            "received": "Messages committed to the route's inbox.",
            "duplicates": "Messages refused as repeats within the route's dedupe window.",
            "processed": "Messages that went through the route's middleware chain.",
            "dropped": "Messages the middleware chain produced no output for (filtered).",
            "dead": "Messages that failed in the middleware chain and went to the DLQ.",
        }
        for field, help_text in route_counters.items():
            family = CounterMetricFamily(
                f"integrator_messages_{field}", help_text, labels=["route"]
            )
            for route, route_stats in stats.items():
                family.add_metric([route], getattr(route_stats, field))
            yield family
        delivered = CounterMetricFamily(
            "integrator_deliveries", "Messages a sink delivered.", labels=["route", "sink"]
        )
        retries = CounterMetricFamily(
            "integrator_delivery_retries",
            "Delivery attempts that failed and were scheduled again.",
            labels=["route", "sink"],
        )
        dead = CounterMetricFamily(
            "integrator_deliveries_dead",
            "Deliveries that failed for good and went to the DLQ.",
            labels=["route", "sink"],
        )
        latency = HistogramMetricFamily(
            "integrator_delivery_latency_seconds",
            "Time from a message's creation to its delivery by the sink.",
            labels=["route", "sink"],
        )
        paused = GaugeMetricFamily(
            "integrator_route_paused",
            "1 while an operator has paused the route's intake.",
            labels=["route"],
        )
        for route, route_stats in stats.items():
            for sink, sink_stats in route_stats.sinks.items():
                delivered.add_metric([route, sink], sink_stats.delivered)
                retries.add_metric([route, sink], sink_stats.failed)
                dead.add_metric([route, sink], sink_stats.dead)
                _add_histogram(latency, [route, sink], sink_stats.latency)
        for route, runtime in self.daemon.routes.items():
            paused.add_metric([route], 1 if runtime.paused else 0)
        yield from (delivered, retries, dead, latency, paused)

    def _queues(self) -> Iterator[Metric]:
        inbox = GaugeMetricFamily(
            "integrator_inbox_depth",
            "Messages waiting for the route's middleware chain.",
            labels=["route"],
        )
        outbox = GaugeMetricFamily(
            "integrator_outbox_depth", "Deliveries waiting for a sink.", labels=["route", "sink"]
        )
        # Known queues show 0 when empty (the store lists only queues with work in them).
        depths = dict.fromkeys(self._queue_keys(), 0) | self.sampler.depths
        for (route, sink), depth in sorted(depths.items()):
            if sink:
                outbox.add_metric([route, sink], depth)
            else:
                inbox.add_metric([route], depth)
        dlq = GaugeMetricFamily(
            "integrator_dlq_size", "Dead letters waiting for an operator.", labels=["route"]
        )
        for route, count in sorted(self.sampler.dlq.items()):
            dlq.add_metric([route], count)
        store_ok = GaugeMetricFamily(
            "integrator_store_readable", "1 when the last read of the store's numbers worked."
        )
        store_ok.add_metric([], 0 if self.sampler.read_error else 1)
        yield from (inbox, outbox, dlq, store_ok)

    def _queue_keys(self) -> Iterator[tuple[str, str]]:
        """``(route, "")`` and ``(route, sink)`` for every running route."""
        for name, runtime in self.daemon.routes.items():
            yield name, ""
            for worker in runtime.sinks:
                yield name, worker.name

    def _components(self) -> Iterator[Metric]:
        assert self.daemon.services is not None
        restarts = CounterMetricFamily(
            "integrator_component_restarts",
            "Times the supervisor restarted a crashed component.",
            labels=["component"],
        )
        up = GaugeMetricFamily(
            "integrator_component_up",
            "1 while the component is starting, running or finished; 0 while failing or stopped.",
            labels=["component"],
        )
        for name, health in sorted(self.daemon.services.health.components.items()):
            restarts.add_metric([name], health.restarts)
            up.add_metric([name], 1 if health.healthy else 0)
        yield from (restarts, up)

    def _breakers(self, registry: Any) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "integrator_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        opened = CounterMetricFamily(
            "integrator_breaker_opened", "Times the circuit breaker opened.", labels=["breaker"]
        )
        if isinstance(registry, BreakerRegistry):
            breakers = {b.name: b for b in registry}
            for layers in self._route_layers():
                for layer in layers:
                    if isinstance(layer, BreakerMiddleware):
                        breakers.setdefault(layer.breaker.name, layer.breaker)
            for name, breaker in sorted(breakers.items()):
                state.add_metric([name], BREAKER_VALUES.get(breaker.state.value, 0))
                opened.add_metric([name], breaker.times_opened)
        yield from (state, opened)

    def _route_layers(self) -> Iterator[list[Any]]:
        """Every middleware list of every running route (unshared breakers live there)."""
        for runtime in self.daemon.routes.values():
            yield runtime.middleware
            for worker in runtime.sinks:
                yield worker.middleware

    def _limiters(self, registry: Any) -> Iterator[Metric]:
        waits = CounterMetricFamily(
            "integrator_rate_limit_waits",
            "Calls that had to wait for a rate or concurrency limiter.",
            labels=["limiter"],
        )
        seconds = CounterMetricFamily(
            "integrator_rate_limit_wait_seconds",
            "Total time calls spent waiting for a rate or concurrency limiter.",
            labels=["limiter"],
        )
        if isinstance(registry, LimiterRegistry):
            for label, stats in sorted(registry.stats.items()):
                waits.add_metric([label], stats.waits)
                seconds.add_metric([label], stats.seconds)
        yield from (waits, seconds)

    def _ops(self, ops: OpsStats) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "integrator_reloads",
            "Configuration reloads, applied or refused (invalid config).",
            labels=["outcome"],
        )
        reloads.add_metric(["applied"], ops.reloads_applied)
        reloads.add_metric(["refused"], ops.reloads_refused)
        webhooks = CounterMetricFamily(
            "integrator_webhook_responses",
            "Answers of the webhook listener, by route and HTTP status.",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(ops.webhook_responses.items()):
            webhooks.add_metric([route, str(status)], count)
        tokens = CounterMetricFamily(
            "integrator_token_refreshes",
            "OAuth2 token fetches and refreshes, by auth and outcome.",
            labels=["auth", "outcome"],
        )
        for (auth, outcome), count in sorted(ops.token_refreshes.items()):
            tokens.add_metric([auth, outcome], count)
        polls = HistogramMetricFamily(
            "integrator_poll_duration_seconds",
            "Duration of each poll of a remote API.",
            labels=["route"],
        )
        for route, histogram in sorted(ops.polls.items()):
            _add_histogram(polls, [route], histogram)
        yield from (reloads, webhooks, tokens, polls)
