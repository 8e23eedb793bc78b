"""Group concurrent calls into one write: the engine runs several deliveries of a sink
at once (``concurrency``), and one transaction for many rows is far cheaper than one
each.

The first caller to find no open batch leads it: it waits up to ``wait`` seconds (or
until ``size`` items have joined), writes the batch, and wakes the others. Every
caller returns only once its own item's outcome is known. No background task is
needed, so nothing outlives the callers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio

from integrator import DeliveryError

T = TypeVar("T")

#: Writes the items; returns, per item, the error it failed with (or None).
Writer = Callable[[Sequence[T]], Awaitable[list[BaseException | None]]]


class _Batch(Generic[T]):
    __slots__ = ("done", "errors", "full", "items", "sealed")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.errors: list[BaseException | None] = []
        self.full = anyio.Event()
        self.done = anyio.Event()
        self.sealed = False


class Batcher(Generic[T]):
    def __init__(self, write: Writer[T], *, size: int, wait: float) -> None:
        self._write = write
        self.size = size
        self.wait = wait
        self._open: _Batch[T] | None = None

    async def add(self, item: T) -> None:
        """Write ``item`` with whatever else arrives meanwhile; raise its own error."""
        batch = self._open
        leader = batch is None
        if batch is None:
            batch = self._open = _Batch()
        index = len(batch.items)
        batch.items.append(item)
        if len(batch.items) >= self.size:
            self._seal(batch)
            batch.full.set()
        if leader:
            await self._lead(batch)
        else:
            await batch.done.wait()
        error = batch.errors[index]
        if error is not None:
            raise error

    async def _lead(self, batch: _Batch[T]) -> None:
        try:
            with anyio.move_on_after(self.wait):
                await batch.full.wait()
        except BaseException:
            # Cancelled before writing: fail the batch (retriable) rather than strand
            # the callers waiting on it.
            self._seal(batch)
            abandoned = DeliveryError("the batch was abandoned before it was written")
            batch.errors = [abandoned] * len(batch.items)
            batch.done.set()
            raise
        self._seal(batch)
        with anyio.CancelScope(shield=True):  # a started transaction is seen through
            try:
                batch.errors = await self._write(batch.items)
            except Exception as err:  # a writer bug must still release every caller
                batch.errors = [err] * len(batch.items)
            batch.done.set()

    def _seal(self, batch: _Batch[T]) -> None:
        if not batch.sealed:
            batch.sealed = True
            if self._open is batch:
                self._open = None
