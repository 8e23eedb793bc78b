"""Per-route counters kept in memory; metrics and `status` read them.

Everything here is a plain number bumped by the engine (no locks, no I/O, no
allocation per message); the admin listener reads it when asked, so an unobserved
daemon pays nothing for being observable.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) for end-to-end delivery latency: retries can take hours.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Upper bounds (seconds) for one poll of a remote API.
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Histogram:
    """Counts of observations per bucket, exported as a Prometheus histogram.

    ``observe`` is a bisect and two additions, cheap enough for every delivery.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        total = 0
        out: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


@dataclass
class SinkStats:
    delivered: int = 0
    failed: int = 0  # attempts that failed and will be retried
    dead: int = 0
    rerouted: int = 0  # handed to the sink's fallback
    last_success_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    #: Seconds from a message's creation to its delivery by this sink.
    latency: Histogram = field(default_factory=Histogram)


@dataclass
class RouteStats:
    received: int = 0  # committed to the inbox
    duplicates: int = 0  # refused by the dedupe window
    processed: int = 0  # went through the chain
    dropped: int = 0  # the chain produced no output
    dead: int = 0  # failed in the chain and went to the DLQ
    sinks: dict[str, SinkStats] = field(default_factory=dict)

    def sink(self, name: str) -> SinkStats:
        stats = self.sinks.get(name)
        if stats is None:
            stats = self.sinks[name] = SinkStats()
        return stats


@dataclass
class OpsStats:
    """Daemon-wide numbers from parts outside a route's pipeline.

    Kept in ``services.shared`` under :data:`OPS_STATS` so that components find it
    in ``context.services`` (see :func:`ops_stats`).
    """

    reloads_applied: int = 0
    reloads_refused: int = 0
    #: ``(route, HTTP status) -> count`` of answers the webhook listener gave.
    webhook_responses: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: ``(auth name, "ok" | "error") -> count`` of token fetches and refreshes.
    token_refreshes: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Duration of each poll, per route.
    polls: dict[str, Histogram] = field(default_factory=dict)

    def count_reload(self, applied: bool) -> None:
        if applied:
            self.reloads_applied += 1
        else:
            self.reloads_refused += 1

    def observe_poll(self, route: str, seconds: float) -> None:
        histogram = self.polls.get(route)
        if histogram is None:
            histogram = self.polls[route] = Histogram(POLL_BUCKETS)
        histogram.observe(seconds)


#: The key of the daemon's :class:`OpsStats` in ``services.shared`` / ``context.services``.
OPS_STATS = "ops_stats"


def ops_stats(services: MutableMapping[str, Any]) -> OpsStats:
    """The daemon's :class:`OpsStats` (created on first use in ``services``)."""
    found = services.get(OPS_STATS)
    if not isinstance(found, OpsStats):
        found = services[OPS_STATS] = OpsStats()
    return found
