"""Per-route counters kept in memory; metrics and `status` read them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SinkStats:
    delivered: int = 0
    failed: int = 0  # attempts that failed and will be retried
    dead: int = 0
    last_success_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None


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
