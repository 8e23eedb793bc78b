"""A re-armable wake-up signal for workers that otherwise sleep until a deadline."""

from __future__ import annotations

import anyio


class Wakeup:
    """``set()`` wakes the waiter; ``clear()`` re-arms before it looks for work again.

    Clearing *before* looking means a ``set()`` that lands while the worker reads the
    store is never lost.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(max(timeout, 0.0)):
            await self._event.wait()
