"""Rate and concurrency limits as middleware, shared by key across chains.

A remote's limit applies to everything that talks to it, so limiters live in a
:class:`LimiterRegistry` (the engine's ``"limiters"`` service) under a key such as
``connection:crm``: every route and sink naming that key takes its turn from one
limiter. Time spent waiting is counted on the registry for metrics.

This module is also the built-in plugin that registers ``rate_limit``,
``concurrency`` and ``breaker`` middleware.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from aiolimiter import AsyncLimiter

from integrator.components import Context, Middleware, Next
from integrator.delivery.breaker import BreakerMiddleware
from integrator.hookspecs import hookimpl
from integrator.message import Message
from integrator.types import Duration

log = logging.getLogger("integrator.delivery.limits")

#: The key of the shared :class:`LimiterRegistry` in ``Context.services``.
SERVICE = "limiters"


@dataclass
class WaitStats:
    """How often calls had to wait for a limiter, and for how long in total."""

    waits: int = 0
    seconds: float = 0.0


class LimiterRegistry:
    """Rate limiters and concurrency limiters by key, created on first definition.

    Definitions with the same key and the same settings share one limiter. When the
    settings differ (a reload changed them, or two routes disagree) the last
    definition wins for every user of the key, and a warning names the key.
    :attr:`total` and :attr:`stats` (per key, or per route for unshared limiters)
    count the waits.
    """

    def __init__(self) -> None:
        self._rates: dict[str, tuple[tuple[float, float], AsyncLimiter]] = {}
        self._capacities: dict[str, anyio.CapacityLimiter] = {}
        self.total = WaitStats()
        self.stats: dict[str, WaitStats] = {}

    def define_rate(self, key: str, requests: float, per: float) -> None:
        """Declare that ``key`` allows ``requests`` calls per ``per`` seconds."""
        settings = (float(requests), float(per))
        existing = self._rates.get(key)
        if existing is not None and existing[0] == settings:
            return
        if existing is not None:
            log.warning(
                "rate limit %r redefined from %g per %gs to %g per %gs",
                key,
                *existing[0],
                *settings,
            )
        self._rates[key] = (settings, new_rate_limiter(requests, per))

    def rate(self, key: str) -> AsyncLimiter:
        """The rate limiter of ``key`` (:meth:`define_rate` first)."""
        return self._rates[key][1]

    def capacity(self, key: str, max_in_flight: int) -> anyio.CapacityLimiter:
        """The concurrency limiter of ``key``, resized in place when ``max_in_flight`` changes."""
        limiter = self._capacities.get(key)
        if limiter is None:
            limiter = self._capacities[key] = anyio.CapacityLimiter(max_in_flight)
        elif limiter.total_tokens != max_in_flight:
            log.warning(
                "concurrency limit %r redefined from %g to %d",
                key,
                limiter.total_tokens,
                max_in_flight,
            )
            limiter.total_tokens = max_in_flight
        return limiter

    def record_wait(self, label: str, seconds: float) -> None:
        stats = self.stats.setdefault(label, WaitStats())
        for counter in (stats, self.total):
            counter.waits += 1
            counter.seconds += seconds


def new_rate_limiter(requests: float, per: float) -> AsyncLimiter:
    """An AsyncLimiter for ``requests`` per ``per`` seconds, fractions allowed.

    aiolimiter cannot hand out one whole request from a bucket smaller than one, so
    ``0.5`` per second becomes one per two seconds.
    """
    if requests <= 0 or per <= 0:
        raise ValueError("a rate limit needs requests > 0 and per > 0")
    if requests < 1:
        return AsyncLimiter(1, per / requests)
    return AsyncLimiter(requests, per)


def _registry(context: Context) -> tuple[LimiterRegistry, bool]:
    """The engine's registry if there is one (shared), else a private one."""
    found = context.services.get(SERVICE)
    if isinstance(found, LimiterRegistry):
        return found, True
    return LimiterRegistry(), False


class RateLimitMiddleware(Middleware):
    """Lets at most ``requests`` messages per ``per`` through, in bursts of ``requests``.

    With ``key`` (for example ``connection:crm``) the limit is shared with every
    other chain naming that key; without, it belongs to this chain alone.
    """

    description = "at most N messages per period, shared by key (leaky bucket)"

    class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        requests: float
        per: Duration = Duration(1)
        key: str | None = None

        def validate(self) -> None:
            if self.requests <= 0:
                raise ValueError(f"requests must be above 0, found {self.requests!r}")
            if self.per <= 0:
                raise ValueError("per must be a duration above 0")

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        registry, shared = _registry(context)
        self.registry = registry
        if options.key is not None and shared:
            self.label = options.key
            registry.define_rate(options.key, options.requests, float(options.per))
            self._limiter: AsyncLimiter | None = None  # looked up per call: last definition wins
        else:
            self.label = f"route:{context.route}"
            self._limiter = new_rate_limiter(options.requests, float(options.per))

    @property
    def limiter(self) -> AsyncLimiter:
        return self._limiter or self.registry.rate(self.options.key)

    async def __call__(self, message: Message, call_next: Next) -> None:
        limiter = self.limiter
        if limiter.has_capacity():
            await limiter.acquire()
        else:
            started = anyio.current_time()
            await limiter.acquire()
            self.registry.record_wait(self.label, anyio.current_time() - started)
        await call_next(message)


class ConcurrencyLimitMiddleware(Middleware):
    """Lets at most ``max`` messages be in the rest of the chain at once.

    With ``key`` the limit is shared with every chain naming that key.
    """

    description = "at most N messages in flight at once, shared by key"

    class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        max: int
        key: str | None = None

        def validate(self) -> None:
            if self.max < 1:
                raise ValueError(f"max must be at least 1, found {self.max!r}")

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options, context)
        registry, shared = _registry(context)
        self.registry = registry
        if options.key is not None and shared:
            self.label = options.key
            self.limiter = registry.capacity(options.key, options.max)
        else:
            self.label = f"route:{context.route}"
            self.limiter = anyio.CapacityLimiter(options.max)

    async def __call__(self, message: Message, call_next: Next) -> None:
        # A fresh borrower per call, not the task: anyio refuses a second token to a task
        # that holds one, and a task may pass through two chains sharing a key.
        borrower = object()
        if self.limiter.available_tokens >= 1:
            await self.limiter.acquire_on_behalf_of(borrower)
        else:
            started = anyio.current_time()
            await self.limiter.acquire_on_behalf_of(borrower)
            self.registry.record_wait(self.label, anyio.current_time() - started)
        try:
            await call_next(message)
        finally:
            self.limiter.release_on_behalf_of(borrower)


@hookimpl
def integrator_middleware(register: Any) -> None:
    register("rate_limit", RateLimitMiddleware)
    register("concurrency", ConcurrencyLimitMiddleware)
    register("breaker", BreakerMiddleware)
