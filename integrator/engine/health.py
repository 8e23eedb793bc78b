"""Health of each running component, as the supervisor sees it.

The admin API, ``integrator status`` and the watchdog read these; nothing here
does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    FAILING = "failing"  # crashed, waiting to be restarted
    FINISHED = "finished"  # returned on its own (a source with nothing more to read)
    STOPPED = "stopped"


@dataclass
class ComponentHealth:
    name: str
    state: State = State.STARTING
    since: float = field(default_factory=time.time)
    restarts: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    last_success_at: float | None = None

    def set(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self.since = time.time()

    def failed(self, error: str) -> None:
        self.last_error = error
        self.last_error_at = time.time()
        self.set(State.FAILING)

    def succeeded(self) -> None:
        self.last_success_at = time.time()

    @property
    def healthy(self) -> bool:
        return self.state in (State.STARTING, State.RUNNING, State.FINISHED)


@dataclass
class HealthBoard:
    """Every component's health, keyed ``route/role`` (``orders/source``, ``orders/sink:http``)."""

    components: dict[str, ComponentHealth] = field(default_factory=dict)

    def component(self, name: str) -> ComponentHealth:
        health = self.components.get(name)
        if health is None:
            health = self.components[name] = ComponentHealth(name)
        return health

    def forget_route(self, route: str) -> None:
        for key in [k for k in self.components if k.startswith(f"{route}/")]:
            del self.components[key]

    def unhealthy(self) -> list[ComponentHealth]:
        return [c for c in self.components.values() if not c.healthy]
