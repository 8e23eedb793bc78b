"""The shared objects one daemon holds, handed to every route it runs."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

import pluggy

from integrator.config import Config
from integrator.delivery.store import DeadLetter, Store
from integrator.engine.backpressure import Backpressure
from integrator.engine.health import HealthBoard
from integrator.engine.stats import RouteStats
from integrator.plugins import Registry

log = logging.getLogger("integrator.engine")


@dataclass
class Services:
    config: Config
    store: Store
    pm: pluggy.PluginManager
    registry: Registry
    backpressure: Backpressure
    health: HealthBoard = field(default_factory=HealthBoard)
    stats: dict[str, RouteStats] = field(default_factory=dict)
    #: Shared objects that components find in ``context.services`` (limiters, breakers…).
    shared: dict[str, Any] = field(default_factory=dict)

    def route_stats(self, route: str) -> RouteStats:
        stats = self.stats.get(route)
        if stats is None:
            stats = self.stats[route] = RouteStats()
        return stats

    async def announce_dead_letter(self, entry: DeadLetter) -> None:
        """Tell plugins (alerting) about a new dead letter; their errors are only logged."""
        for impl in self.pm.hook.integrator_dead_letter.get_hookimpls():
            try:
                result = impl.function(entry=entry)
                if inspect.isawaitable(result):
                    await result
            except Exception as err:
                log.error(
                    "plugin %s failed in integrator_dead_letter: %s: %s",
                    impl.plugin_name,
                    type(err).__name__,
                    err,
                )
