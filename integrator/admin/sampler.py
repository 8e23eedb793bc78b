"""Numbers that cost I/O or need history: queue depths, DLQ sizes, store health, rates.

Prometheus collectors are synchronous and the store is not, so the async handlers
call :meth:`Sampler.refresh` (cached for a second, so a burst of scrapes and page
refreshes reads the store once) before reading the cached values. Rates come from
the in-memory counters sampled once a second: no store reads, no per-message cost.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from integrator.errors import StoreError
from integrator.types import REDACTOR

if TYPE_CHECKING:
    from integrator.engine.daemon import Daemon

#: Rates are averaged over this many seconds.
RATE_WINDOW = 10.0
#: How long a write probe's verdict is trusted (``/readyz`` may be polled every second).
PROBE_TTL = 5.0
PROBE_TIMEOUT = 2.0
PROBE_KEY = "admin:ready-probe"


@dataclass
class Rates:
    received: float | None = None  # messages per second into the inbox
    delivered: float | None = None  # deliveries per second, all sinks together


class Sampler:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.started_at = time.time()
        self.depths: dict[tuple[str, str], int] = {}
        self.dlq: dict[str, int] = {}
        self.dlq_total = 0
        #: Why the last store read failed ("" when it worked).
        self.read_error = ""
        self._read_at = float("-inf")
        self._lock = anyio.Lock()
        self._probe_at = float("-inf")
        self._probe_error = ""
        self._history: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(
            maxlen=int(RATE_WINDOW) + 1
        )

    # -- store numbers -----------------------------------------------------------------------

    async def refresh(self, max_age: float = 1.0) -> None:
        """Read depths and DLQ sizes from the store unless the cached ones are fresh."""
        services = self.daemon.services
        if services is None:
            return
        async with self._lock:
            if time.monotonic() - self._read_at < max_age:
                return
            routes = sorted(set(self.daemon.config.routes) | set(services.stats))
            try:
                depths = await services.store.depths()
                dlq = {route: await services.store.dlq_count(route) for route in routes}
                total = await services.store.dlq_count()
            except StoreError as err:
                self.read_error = REDACTOR.redact(str(err))
            else:
                self.depths, self.dlq, self.dlq_total, self.read_error = depths, dlq, total, ""
            self._read_at = time.monotonic()

    async def store_problem(self) -> str:
        """Why the store cannot take a write right now ("" when it can), cached briefly."""
        services = self.daemon.services
        if services is None:
            return "the store is not open yet"
        if time.monotonic() - self._probe_at < PROBE_TTL:
            return self._probe_error
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                await services.store.set_state(PROBE_KEY, time.time())
        except TimeoutError:
            self._probe_error = f"the store did not complete a write within {PROBE_TIMEOUT:g}s"
        except StoreError as err:
            self._probe_error = REDACTOR.redact(str(err))
        else:
            self._probe_error = ""
        self._probe_at = time.monotonic()
        return self._probe_error

    def depth(self, route: str, sink: str = "") -> int:
        """Waiting work of a route's inbox (``sink=""``) or of one sink."""
        return self.depths.get((route, sink), 0)

    # -- rates -------------------------------------------------------------------------------

    def _counters(self) -> dict[str, tuple[int, int]]:
        services = self.daemon.services
        if services is None:
            return {}
        return {
            route: (stats.received, sum(s.delivered for s in stats.sinks.values()))
            for route, stats in services.stats.items()
        }

    def sample(self) -> None:
        self._history.append((time.monotonic(), self._counters()))

    async def run(self) -> None:
        """Sample the counters once a second, forever (run in the admin task group)."""
        while True:
            self.sample()
            await anyio.sleep(1.0)

    def rates(self, route: str) -> Rates:
        """Per-second rates over the last :data:`RATE_WINDOW` seconds (None until known)."""
        if not self._history:
            return Rates()
        then, old = self._history[0]
        elapsed = time.monotonic() - then
        if elapsed < 0.5:
            return Rates()
        received, delivered = self._counters().get(route, (0, 0))
        old_received, old_delivered = old.get(route, (0, 0))
        return Rates(
            received=max(0, received - old_received) / elapsed,
            delivered=max(0, delivered - old_delivered) / elapsed,
        )
