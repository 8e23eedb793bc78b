"""The queue between a sink's feeder and its delivery slots."""

from __future__ import annotations

import anyio
import pytest

from integrator.engine.handoff import Handoff


async def test_items_come_out_in_the_order_they_went_in() -> None:
    queue = Handoff[int](10)
    for n in range(5):
        await queue.put(n)
    assert [await queue.get() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_put_waits_while_the_queue_is_full() -> None:
    queue = Handoff[int](2)
    await queue.put(1)
    await queue.put(2)
    with anyio.move_on_after(0.05) as waited:
        await queue.put(3)
    assert waited.cancelled_caught
    assert len(queue) == 2


async def test_a_waiting_put_goes_in_once_a_taker_makes_room() -> None:
    queue = Handoff[int](1)
    await queue.put(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.put, 2)
        await anyio.wait_all_tasks_blocked()
        assert await queue.get() == 1
    assert await queue.get() == 2


async def test_a_taker_waits_for_an_item() -> None:
    queue = Handoff[str](1)
    got: list[str] = []

    async def take() -> None:
        got.append(await queue.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        await queue.put("x")
    assert got == ["x"]


async def test_close_lets_takers_finish_the_queue_then_ends_them() -> None:
    queue = Handoff[int](5)
    await queue.put(1)
    await queue.put(2)
    queue.close()
    assert await queue.get() == 1
    assert await queue.get() == 2
    with pytest.raises(anyio.EndOfStream):
        await queue.get()


async def test_close_wakes_takers_waiting_on_an_empty_queue() -> None:
    queue = Handoff[int](1)
    ended = 0

    async def take() -> None:
        nonlocal ended
        with pytest.raises(anyio.EndOfStream):
            await queue.get()
        ended += 1

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(take)
        await anyio.wait_all_tasks_blocked()
        queue.close()
    assert ended == 3


async def test_a_taker_cancelled_as_an_item_arrives_loses_no_item() -> None:
    queue = Handoff[int](1)
    got: list[int] = []

    async def take(scope: anyio.CancelScope) -> None:
        with scope:
            got.append(await queue.get())

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(take, scope)
        await anyio.wait_all_tasks_blocked()
        await queue.put(7)
        scope.cancel()  # the same tick: the taker was woken, and is now cancelled
    assert got == [7] or (len(queue) == 1 and await queue.get() == 7)


async def test_nothing_can_be_put_once_closed() -> None:
    queue = Handoff[int](1)
    queue.close()
    with pytest.raises(anyio.ClosedResourceError):
        await queue.put(1)
