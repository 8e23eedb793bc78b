"""A bounded queue between a sink's feeder and its delivery slots.

anyio's memory object stream makes every item a checkpoint with task bookkeeping
(about a fifth of the CPU of draining a backlog into a file); here an item costs a
deque operation when there is work, and a wait only when there is none.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class Handoff(Generic[T]):
    """One feeder ``put``\\s, any number of takers ``get``; ``close`` ends the takers
    once the queue is empty. An item is popped only by a taker that is not cancelled
    at that moment, so cancelling a waiting taker never loses one."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[T] = deque()
        self._capacity = max(1, capacity)
        self._closed = False
        self._has_items = anyio.Event()
        self._has_room = anyio.Event()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        """Append ``item``, waiting while the queue is full;
        :class:`anyio.ClosedResourceError` once closed (no taker would get it)."""
        if self._closed:
            raise anyio.ClosedResourceError
        while len(self._items) >= self._capacity:
            if self._has_room.is_set():
                self._has_room = anyio.Event()
            await self._has_room.wait()
        self._items.append(item)
        self._has_items.set()

    async def get(self) -> T:
        """The oldest item, waiting for one; :class:`anyio.EndOfStream` once closed and empty."""
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            if self._has_items.is_set():
                self._has_items = anyio.Event()
            await self._has_items.wait()
        item = self._items.popleft()
        self._has_room.set()
        return item

    def close(self) -> None:
        """No more items will come: takers finish what is queued, then end."""
        self._closed = True
        self._has_items.set()
