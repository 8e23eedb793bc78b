"""High/low-water marks on the store: sources pause above one and resume below the other."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

log = logging.getLogger("integrator.backpressure")


class Backpressure:
    """Hysteresis on the number of messages waiting in the store.

    ``pending`` is a cheap callable (the store keeps an in-memory count), so checking
    costs nothing on the hot path.
    """

    def __init__(self, pending: Callable[[], int], high_water: int, low_water: int) -> None:
        self._pending = pending
        self.high_water = high_water
        self.low_water = min(low_water, high_water)
        self._paused = False

    @property
    def accepting(self) -> bool:
        waiting = self._pending()
        if self._paused and waiting < self.low_water:
            self._paused = False
            log.info(
                "store below low-water mark (%d < %d): intake resumes", waiting, self.low_water
            )
        elif not self._paused and waiting >= self.high_water:
            self._paused = True
            log.warning(
                "store above high-water mark (%d >= %d): intake paused until it drains below %d",
                waiting,
                self.high_water,
                self.low_water,
            )
        return not self._paused

    async def wait_accepting(self, poll: float = 0.1) -> None:
        # Polls only while paused: draining happens in other tasks' commits, and a
        # tenth of a second is far below any upstream's retry interval.
        while not self.accepting:  # noqa: ASYNC110
            await anyio.sleep(poll)
