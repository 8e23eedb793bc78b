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
        self._set = False  # mirrors the event: intake sets it once per message

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._event.set()

    def clear(self) -> None:
        if self._set:
            self._set = False
            self._event = anyio.Event()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(max(timeout, 0.0)):
            await self._event.wait()
