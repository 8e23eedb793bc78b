"""Wait for something that happens in another task, process or server.

A connector test cannot know when a broker has redelivered a message or a daemon
has reconnected; it can only look again. :func:`eventually` is that loop, written
once: it takes plain or async predicates (a server-side check is usually async),
returns what the predicate returned, and fails with a message naming what was
awaited instead of hanging until the per-test timeout.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


class TimedOut(AssertionError):
    """Raised when a condition did not hold in time (an assertion failure to pytest)."""


#: A condition to poll: a function returning a truthy value when it holds, or a
#: coroutine function doing the same.
Predicate = Callable[[], Any | Awaitable[Any]]


async def eventually(
    predicate: Predicate,
    what: str = "condition",
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> Any:
    """Call ``predicate`` until it returns something truthy, and return that.

    Raises :class:`TimedOut` ("timed out after …s waiting for <what>") when it has
    not held within ``timeout`` seconds. The predicate is always called at least
    once, and once more after the deadline, so a slow machine does not fail a check
    that has just come true.
    """
    deadline = anyio.current_time() + timeout
    while True:
        expired = anyio.current_time() > deadline
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if expired:
            raise TimedOut(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(interval)
