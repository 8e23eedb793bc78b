"""What a route test lends middleware instead of the network and the durable store."""

from __future__ import annotations

from typing import Any

from integrator.config import Config
from integrator.errors import IntegratorError
from integrator.http.client import HttpClients
from integrator.plugins import Registry


class NotAvailableInTests(IntegratorError, AttributeError):
    """Raised when a middleware asks a route test for something it cannot have offline:
    the network, or a durable-store feature beyond key-value state. It fails the case
    whatever it expected, so a test never passes by accident on a missing service."""


class OfflineHttpClients(HttpClients):
    """The ``"http"`` service during route tests: every connection refuses to open."""

    async def acquire(self, name: str | None, config: Any = None) -> Any:
        raise NotAvailableInTests(
            f"connection {name or '(none)'}: integrator test runs offline and makes no HTTP "
            'requests; test lookups with a static table (lookup = "table") or a python '
            "function instead"
        )


class InMemoryTestStore:
    """Stands in for the durable store in route tests: state in memory, fresh per case.

    It keeps key-value state (``get_state``/``set_state``: checkpoints, tokens) and
    the dedupe memory (``remember``). Any other store method fails the case with
    :class:`NotAvailableInTests`.
    """

    def __init__(self) -> None:
        from integrator.transforms.dedupe import MemorySeen

        self.state: dict[str, Any] = {}
        self._seen = MemorySeen()

    async def get_state(self, key: str) -> Any:
        return self.state.get(key)

    async def set_state(self, key: str, value: Any) -> None:
        self.state[key] = value

    async def remember(self, scope: str, key: str, window: float, *, owner: str = "") -> bool:
        return await self._seen.remember(scope, key, window, owner=owner)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotAvailableInTests(f"the route-test store has no {name}(): it keeps state only")


# -- cases --------------------------------------------------------------------------------


def offline_services(config: Config, registry: Registry) -> dict[str, Any]:
    """The services a component finds during a route test (``offline`` tells it why)."""
    from integrator.delivery.breaker import BreakerRegistry
    from integrator.delivery.limits import LimiterRegistry
    from integrator.transforms.convert import codecs_from_registry

    return {
        "offline": True,
        "store": InMemoryTestStore(),
        "http": OfflineHttpClients(registry=registry),
        "limiters": LimiterRegistry(),
        "breakers": BreakerRegistry(),
        "codecs": codecs_from_registry(registry),
        "connections": config.connections,
        "registry": registry,
    }
