"""High/low-water hysteresis: sources pause above one mark and resume below the other."""

from __future__ import annotations

import anyio

from integrator.engine.backpressure import Backpressure


def test_intake_pauses_at_high_water_and_resumes_below_low_water() -> None:
    levels = iter((0, 9, 10, 8, 6, 5, 4, 9))
    gate = Backpressure(lambda: next(levels), high_water=10, low_water=5)
    observed = [gate.accepting for _ in range(8)]
    assert observed == [True, True, False, False, False, False, True, True]


async def test_wait_accepting_returns_once_drained() -> None:
    waiting = 20
    gate = Backpressure(lambda: waiting, high_water=10, low_water=5)
    assert not gate.accepting

    async def drain() -> None:
        nonlocal waiting
        await anyio.sleep(0.05)
        waiting = 3

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain)
        with anyio.fail_after(2):
            await gate.wait_accepting(poll=0.01)
    assert gate.accepting
