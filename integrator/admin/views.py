"""What the admin API says about the daemon: route summaries and readiness.

Built from what the engine already keeps in memory (route runtimes, stats, the
health board, the breakers) plus the :class:`~integrator.admin.sampler.Sampler`'s
cached store numbers. The same views feed the JSON API, the status page and
``integrator status``; secrets are scrubbed when a view is encoded, not here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from integrator import __version__
from integrator.admin.sampler import Sampler
from integrator.delivery.breaker import BreakerMiddleware
from integrator.engine.health import State
from integrator.engine.stats import RouteStats

if TYPE_CHECKING:
    from integrator.components import Middleware
    from integrator.engine.daemon import Daemon
    from integrator.engine.route import RouteRuntime

#: Breaker states from best to worst; a route shows its worst.
BREAKER_ORDER = ("closed", "half_open", "open")


class ComponentView(msgspec.Struct, kw_only=True):
    name: str
    state: str
    restarts: int
    last_error: str
    last_error_at: float | None


class SinkView(msgspec.Struct, kw_only=True):
    name: str
    type: str
    delivered: int
    retries: int
    dead: int
    depth: int
    last_success_at: float | None
    last_error: str
    last_error_at: float | None
    breaker: str | None


class RouteView(msgspec.Struct, kw_only=True):
    name: str
    #: running, paused, failing, stopped (enabled but not running) or disabled.
    state: str
    #: ok, degraded, failing, paused or disabled: what the status page colours.
    health: str
    source: str
    description: str
    received: int
    duplicates: int
    processed: int
    dropped: int
    dead: int
    rate_in: float | None
    rate_out: float | None
    inbox_depth: int
    #: Waiting work: the inbox plus every sink's deliveries.
    depth: int
    dlq: int
    last_success_at: float | None
    last_error: str
    last_error_at: float | None
    #: The worst state of the route's breakers, None when it has none.
    breaker: str | None
    breakers: dict[str, str]
    sinks: list[SinkView]
    components: list[ComponentView]


class StatusView(msgspec.Struct, kw_only=True):
    version: str
    started_at: float
    uptime: float
    ready: bool
    reasons: list[str]
    dlq_total: int
    breakers: dict[str, str]
    routes: list[RouteView]


def _breakers(layers: list[Middleware]) -> dict[str, str]:
    return {
        layer.breaker.name: layer.breaker.state.value
        for layer in layers
        if isinstance(layer, BreakerMiddleware)
    }


def _worst(states: dict[str, str]) -> str | None:
    if not states:
        return None
    return max(states.values(), key=lambda s: BREAKER_ORDER.index(s) if s in BREAKER_ORDER else 0)


def route_view(daemon: Daemon, name: str, sampler: Sampler) -> RouteView:
    """One route's summary (it may be configured but not running)."""
    assert daemon.services is not None
    config = daemon.config.routes.get(name)
    runtime: RouteRuntime | None = daemon.routes.get(name)
    stats = daemon.services.stats.get(name) or RouteStats()
    components = [
        ComponentView(
            name=health.name,
            state=health.state.value,
            restarts=health.restarts,
            last_error=health.last_error,
            last_error_at=health.last_error_at,
        )
        for key, health in sorted(daemon.services.health.components.items())
        if key.startswith(f"{name}/")
    ]
    sinks: list[SinkView] = []
    breakers: dict[str, str] = {}
    if runtime is not None:
        breakers.update(_breakers(runtime.middleware))
        for worker in runtime.sinks:
            sink_breakers = _breakers(worker.middleware)
            breakers.update(sink_breakers)
            sinks.append(_sink_view(name, worker.name, worker.spec.type, stats, sampler))
            sinks[-1].breaker = _worst(sink_breakers)
    elif config is not None:
        sinks = [_sink_view(name, spec.name, spec.type, stats, sampler) for spec in config.sinks]

    successes = [s.last_success_at for s in sinks if s.last_success_at is not None]
    errors = [(s.last_error_at, s.last_error) for s in sinks if s.last_error_at is not None]
    errors += [(c.last_error_at, c.last_error) for c in components if c.last_error_at is not None]
    last_error_at, last_error = max(errors) if errors else (None, "")
    breaker = _worst(breakers)
    failing = any(c.state == State.FAILING.value for c in components)
    rates = sampler.rates(name)

    if config is not None and not config.enabled:
        state = health = "disabled"
    elif runtime is None:
        state, health = "stopped", "failing"
    elif failing:
        state = health = "failing"
    elif runtime.paused:
        state = health = "paused"
    else:
        state = "running"
        latest_failed = any(
            s.last_error_at is not None
            and (s.last_success_at is None or s.last_error_at > s.last_success_at)
            for s in sinks
        )
        if breaker == "open":
            health = "failing"
        elif breaker == "half_open" or latest_failed:
            health = "degraded"
        else:
            health = "ok"

    inbox = sampler.depth(name)
    return RouteView(
        name=name,
        state=state,
        health=health,
        source=config.source.type if config is not None else "",
        description=config.description if config is not None else "",
        received=stats.received,
        duplicates=stats.duplicates,
        processed=stats.processed,
        dropped=stats.dropped,
        dead=stats.dead,
        rate_in=rates.received,
        rate_out=rates.delivered,
        inbox_depth=inbox,
        depth=inbox + sum(s.depth for s in sinks),
        dlq=sampler.dlq.get(name, 0),
        last_success_at=max(successes) if successes else None,
        last_error=last_error,
        last_error_at=last_error_at,
        breaker=breaker,
        breakers=breakers,
        sinks=sinks,
        components=components,
    )


def _sink_view(route: str, sink: str, type_: str, stats: RouteStats, sampler: Sampler) -> SinkView:
    s = stats.sinks.get(sink)
    return SinkView(
        name=sink,
        type=type_,
        delivered=s.delivered if s else 0,
        retries=s.failed if s else 0,
        dead=s.dead if s else 0,
        depth=sampler.depth(route, sink),
        last_success_at=s.last_success_at if s else None,
        last_error=s.last_error if s else "",
        last_error_at=s.last_error_at if s else None,
        breaker=None,
    )


def route_names(daemon: Daemon) -> list[str]:
    """Configured routes first (in config order), then any that run but left the config."""
    names = list(daemon.config.routes)
    return names + [n for n in daemon.routes if n not in daemon.config.routes]


def route_views(daemon: Daemon, sampler: Sampler) -> list[RouteView]:
    return [route_view(daemon, name, sampler) for name in route_names(daemon)]


async def readiness(daemon: Daemon, sampler: Sampler) -> list[str]:
    """Why the daemon is not ready to do its job; empty when it is."""
    reasons: list[str] = []
    if daemon.services is None or not daemon.ready.is_set():
        reasons.append("starting: the routes are not all started yet")
        return reasons
    problem = await sampler.store_problem()
    if problem:
        reasons.append(f"store: {problem}")
    for name, route in daemon.config.routes.items():
        if route.enabled and name not in daemon.routes:
            reasons.append(f"route {name} is not running")
    for health in daemon.services.health.unhealthy():
        detail = f": {health.last_error}" if health.last_error else ""
        reasons.append(f"{health.name} is {health.state.value}{detail}")
    return reasons


async def status_view(daemon: Daemon, sampler: Sampler) -> StatusView:
    await sampler.refresh()
    reasons = await readiness(daemon, sampler)
    breakers = daemon.services.shared.get("breakers") if daemon.services else None
    return StatusView(
        version=__version__,
        started_at=sampler.started_at,
        uptime=time.time() - sampler.started_at,
        ready=not reasons,
        reasons=reasons,
        dlq_total=sampler.dlq_total,
        breakers=breakers.states() if breakers is not None else {},
        routes=route_views(daemon, sampler),
    )
