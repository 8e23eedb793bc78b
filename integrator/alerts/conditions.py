"""What each alert rule looks at: findings read from the daemon's own state.

Nothing here keeps watch on its own. :class:`Conditions` is asked once per
evaluation and answers, per rule, the subjects (a breaker, a route, an auth) for
which the condition holds right now. Everything comes from state the engine
already keeps: breakers, the health board, per-sink counters, the store's DLQ and
queue sizes, and the OAuth2 refresh counters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from integrator.config import AlertRule
from integrator.delivery.breaker import BreakerMiddleware, BreakerRegistry, CircuitBreaker
from integrator.engine.health import ComponentHealth, State
from integrator.engine.stats import OPS_STATS, OpsStats

if TYPE_CHECKING:
    from integrator.engine.daemon import Daemon

#: How a failed token fetch or refresh reads in an error text: every OAuth2 error of
#: the core says "OAuth2 token request/endpoint"; plugins' auth errors name AuthError.
AUTH_FAILURE = re.compile(r"OAuth2 token|\bAuthError\b|invalid_grant|invalid_client")


@dataclass
class Finding:
    """One subject for which a rule's condition holds now."""

    #: What is wrong: a breaker's name, a route's name, ``auth:NAME``.
    subject: str
    route: str | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    #: When the condition began, when the state says so (else: when first seen).
    since: float | None = None


class Snapshot:
    """The store's numbers, read at most once per evaluation and only if a rule needs them."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._dlq: dict[str, int] = {}
        self._depths: dict[tuple[str, str], int] | None = None

    @property
    def store(self) -> Any:
        assert self.daemon.services is not None
        return self.daemon.services.store

    async def dlq(self, route: str) -> int:
        if route not in self._dlq:
            self._dlq[route] = await self.store.dlq_count(route)
        return self._dlq[route]

    async def depth(self, route: str, sink: str) -> int:
        if self._depths is None:
            self._depths = await self.store.depths()
        return self._depths.get((route, sink), 0)


class Conditions:
    """Evaluates rules; remembers the little it must between evaluations (counters)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._times_opened: dict[str, int] = {}
        self._opened_since_last: set[str] = set()
        self._refreshes: dict[str, tuple[int, int]] = {}
        #: auth name -> when its refreshes started failing
        self._token_failing: dict[str, float] = {}

    def begin(self) -> None:
        """Once per evaluation: note what changed since the last one (counters only grow).

        A breaker that opened and closed again between two evaluations is still worth
        an alert; an auth whose refreshes failed, and none succeeded, is failing until
        one succeeds.
        """
        self._opened_since_last = set()
        for breaker in self._all_breakers():
            if breaker.times_opened > self._times_opened.get(breaker.name, 0):
                self._opened_since_last.add(breaker.name)
            self._times_opened[breaker.name] = breaker.times_opened
        services = self.daemon.services
        ops = services.shared.get(OPS_STATS) if services is not None else None
        if not isinstance(ops, OpsStats):
            return
        for auth in {auth for auth, _ in ops.token_refreshes}:
            counts = (ops.token_refreshes[(auth, "ok")], ops.token_refreshes[(auth, "error")])
            ok_before, errors_before = self._refreshes.get(auth, (0, 0))
            self._refreshes[auth] = counts
            if counts[0] > ok_before:
                self._token_failing.pop(auth, None)
            elif counts[1] > errors_before:
                self._token_failing.setdefault(auth, time.time())

    def routes(self, rule: AlertRule) -> list[str]:
        """The routes a rule watches: the one it names, else every configured or running one."""
        if rule.route is not None:
            return [rule.route]
        names = list(self.daemon.config.routes)
        return names + [n for n in self.daemon.routes if n not in names]

    async def findings(self, rule: AlertRule, snapshot: Snapshot) -> list[Finding]:
        if rule.when == "breaker_open":
            return self._breakers(rule)
        if rule.when == "dlq_size":
            return [f for r in self.routes(rule) if (f := await self._dlq(rule, r, snapshot))]
        if rule.when == "route_failing":
            found = []
            for route in self.routes(rule):
                reasons = await self._failures(route, snapshot)
                if reasons:
                    found.append(_route_finding(route, "is failing", reasons))
            return found
        return await self._token_refresh(rule, snapshot)

    # -- breakers -----------------------------------------------------------------------------

    def _breakers(self, rule: AlertRule) -> list[Finding]:
        found = []
        for breaker, routes in self._all_breakers().items():
            if rule.route is not None and rule.route not in routes:
                continue
            blipped = breaker.name in self._opened_since_last
            if breaker.state.value == "closed" and not blipped:
                continue
            state = breaker.state.value.replace("_", "-")
            summary = f"circuit breaker {breaker.name} is {state}"
            if breaker.state.value == "closed":
                summary = f"circuit breaker {breaker.name} opened (closed again since)"
            since = None
            if breaker.opened_at is not None:
                since = time.time() - (breaker.clock() - breaker.opened_at)
            found.append(
                Finding(
                    subject=breaker.name,
                    route=rule.route or (routes[0] if len(routes) == 1 else None),
                    summary=summary,
                    details={
                        "breaker": breaker.name,
                        "breaker_state": breaker.state.value,
                        "times_opened": breaker.times_opened,
                        "cooldown": breaker.cooldown,
                        "routes": routes,
                    },
                    since=since,
                )
            )
        return found

    def _all_breakers(self) -> dict[CircuitBreaker, list[str]]:
        """Every breaker: the shared registry's and each route's own, with their routes."""
        found: dict[CircuitBreaker, list[str]] = {}
        services = self.daemon.services
        registry = services.shared.get("breakers") if services is not None else None
        if isinstance(registry, BreakerRegistry):
            for breaker in registry:
                found[breaker] = []
        for name, runtime in self.daemon.routes.items():
            layers = [*runtime.middleware]
            for worker in runtime.sinks:
                layers.extend(worker.middleware)
            for layer in layers:
                if isinstance(layer, BreakerMiddleware):
                    routes = found.setdefault(layer.breaker, [])
                    if name not in routes:
                        routes.append(name)
        return found

    # -- dead letters -------------------------------------------------------------------------

    async def _dlq(self, rule: AlertRule, route: str, snapshot: Snapshot) -> Finding | None:
        count = await snapshot.dlq(route)
        if count <= rule.threshold:
            return None
        return Finding(
            subject=route,
            route=route,
            summary=f"route {route}: {count} dead letter(s), more than {rule.threshold}",
            details={"dlq": count, "threshold": rule.threshold},
        )

    # -- failing routes -----------------------------------------------------------------------

    async def _failures(self, route: str, snapshot: Snapshot) -> list[tuple[str, float | None]]:
        """Why a route is failing right now, each with when that began (if known)."""
        reasons: list[tuple[str, float | None]] = []
        services = self.daemon.services
        if services is None:
            return reasons
        for health in _route_components(services.health.components, route):
            if health.state is State.FAILING:
                reasons.append((f"{health.name} is failing: {health.last_error}", health.since))
            elif _failed_while_running(health):
                reasons.append((f"{health.name}: {health.last_error}", None))
        stats = services.stats.get(route)
        for sink, sink_stats in (stats.sinks if stats is not None else {}).items():
            failed_last = sink_stats.last_error_at is not None and (
                sink_stats.last_success_at is None
                or sink_stats.last_error_at > sink_stats.last_success_at
            )
            # A failure with nothing left to deliver ended in the DLQ: dlq_size's business.
            if failed_last and await snapshot.depth(route, sink) > 0:
                reasons.append((f"sink {sink}: {sink_stats.last_error}", None))
        return reasons

    # -- token refreshes ----------------------------------------------------------------------

    async def _token_refresh(self, rule: AlertRule, snapshot: Snapshot) -> list[Finding]:
        found = []
        for route in self.routes(rule):
            reasons = [
                r for r in await self._failures(route, snapshot) if AUTH_FAILURE.search(r[0])
            ]
            if reasons:
                found.append(_route_finding(route, "cannot get an access token", reasons))
        if rule.route is None:
            found.extend(self._refresh_counters())
        return found

    def _refresh_counters(self) -> Iterator[Finding]:
        """Auths whose refreshes fail (``OpsStats.token_refreshes``, where providers count)."""
        for auth, since in sorted(self._token_failing.items()):
            yield Finding(
                subject=f"auth:{auth}",
                route=None,
                summary=f"token refresh for {auth} is failing",
                details={"auth": auth, "errors": self._refreshes[auth][1]},
                since=since,
            )


def _route_components(
    components: dict[str, ComponentHealth], route: str
) -> Iterator[ComponentHealth]:
    prefix = f"{route}/"
    for key, health in list(components.items()):
        if key.startswith(prefix):
            yield health


def _failed_while_running(health: ComponentHealth) -> bool:
    """A component that reports errors without crashing (a poller) and has not recovered.

    A crash sets ``last_error_at`` before the restart changes the state, so an error
    newer than the current state's ``since`` happened while running.
    """
    if health.state is not State.RUNNING or health.last_error_at is None:
        return False
    if health.last_error_at < health.since:
        return False
    return health.last_success_at is None or health.last_error_at > health.last_success_at


def _route_finding(route: str, what: str, reasons: list[tuple[str, float | None]]) -> Finding:
    texts = [text for text, _ in reasons]
    starts = [since for _, since in reasons if since is not None]
    more = f" (and {len(texts) - 1} more)" if len(texts) > 1 else ""
    return Finding(
        subject=route,
        route=route,
        summary=f"route {route} {what}: {texts[0]}{more}",
        details={"reasons": texts},
        since=min(starts) if starts else None,
    )
