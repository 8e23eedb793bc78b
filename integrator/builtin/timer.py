"""``timer`` source: emits a message at a fixed interval (heartbeats, demos, scheduled pushes)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.abc
import msgspec

from integrator.components import Intake, Source
from integrator.hookspecs import hookimpl
from integrator.message import Message
from integrator.types import Duration


class TimerOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Time between two messages.
    interval: Duration = Duration(1.0)
    #: The body of each message; by default ``{"tick": N, "at": <unix time>}``.
    body: Any = None
    #: Stop after this many messages (default: never).
    count: int | None = None
    #: Emit the first message at start rather than after one interval.
    immediately: bool = True

    def validate(self) -> None:
        if self.interval <= 0:
            raise ValueError("interval must be greater than zero")
        if self.count is not None and self.count < 0:
            raise ValueError("count cannot be negative")


class TimerSource(Source):
    Options = TimerOptions
    description = "emit a message every interval"
    options: TimerOptions

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        options = self.options
        tick = int(await intake.load_checkpoint("tick") or 0)
        task_status.started()
        next_at = time.monotonic() + (0 if options.immediately else options.interval)
        emitted = 0
        while options.count is None or emitted < options.count:
            await anyio.sleep(max(0.0, next_at - time.monotonic()))
            await intake.wait_accepting()
            tick += 1
            body = options.body if options.body is not None else {"tick": tick, "at": time.time()}
            await intake.submit([Message(body=body, attributes={"tick": tick})])
            await intake.save_checkpoint("tick", tick)
            emitted += 1
            # Anchor to the schedule, not to when we woke, so the interval does not drift;
            # after a long stall skip missed ticks instead of bursting.
            next_at = max(next_at + options.interval, time.monotonic())


@hookimpl
def integrator_sources(register: Any) -> None:
    register("timer", TimerSource)
