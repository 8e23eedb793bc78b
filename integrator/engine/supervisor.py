"""Run a component forever: restart it with capped exponential backoff when it crashes.

A crash is logged and shown on the component's health; it never reaches the task
group above, so one broken route cannot take the others down.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from integrator.engine.health import ComponentHealth, State

log = logging.getLogger("integrator.supervisor")

Target = Callable[..., Awaitable[None]]


class _Status(anyio.abc.TaskStatus[Any]):
    """Passed to the component: its ``started()`` marks it running (and the first time,
    tells whoever started the supervisor)."""

    def __init__(self, health: ComponentHealth, outer: anyio.abc.TaskStatus[None]) -> None:
        self.health = health
        self.outer = outer
        self.reported = False
        self.started_at: float | None = None

    def started(self, value: Any = None) -> None:
        self.health.set(State.RUNNING)
        self.started_at = time.monotonic()
        self.report()

    def report(self) -> None:
        if not self.reported:
            self.reported = True
            self.outer.started()


async def supervise(
    target: Target,
    health: ComponentHealth,
    *,
    initial_backoff: float = 0.5,
    max_backoff: float = 60.0,
    stable_after: float = 60.0,
    keep_going: Callable[[], bool] = lambda: True,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``await target(task_status=…)`` until it returns; restart it when it raises.

    The backoff doubles at each consecutive crash up to ``max_backoff`` (with a
    little jitter) and resets once the component has run for ``stable_after``
    seconds. ``task_status.started()`` fires when the component first reports
    started, or after its first crash, so a broken route never blocks READY.
    """
    status = _Status(health, task_status)
    delay = initial_backoff
    while True:
        status.started_at = None
        try:
            await target(task_status=status)
        except Exception as err:
            ran_for = time.monotonic() - status.started_at if status.started_at else 0.0
            if ran_for >= stable_after:
                delay = initial_backoff
            health.failed(f"{type(err).__name__}: {err}")
            if not keep_going():  # shutting down: a restart would only delay the exit
                status.report()
                log.error("%s failed while stopping: %s: %s", health.name, type(err).__name__, err)
                return
            health.restarts += 1
            wait = min(delay, max_backoff) * random.uniform(0.8, 1.2)
            log.error(
                "%s crashed: %s: %s; restarting in %.1fs",
                health.name,
                type(err).__name__,
                err,
                wait,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            status.report()
            await anyio.sleep(wait)
            delay = min(delay * 2, max_backoff)
        else:
            health.set(State.FINISHED)
            status.report()
            return
