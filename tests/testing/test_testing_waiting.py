"""``eventually``: poll a condition until it holds, or fail naming it."""

from __future__ import annotations

import time

import pytest

from integrator.testing import TimedOut, eventually


async def test_it_returns_what_the_predicate_returned_once_truthy() -> None:
    calls = []

    def third_time() -> str | None:
        calls.append(1)
        return "done" if len(calls) == 3 else None

    assert await eventually(third_time, "three calls", interval=0.001) == "done"
    assert len(calls) == 3


async def test_an_async_predicate_is_awaited() -> None:
    async def check() -> list[int]:
        return [1]

    assert await eventually(check) == [1]


async def test_a_condition_that_never_holds_fails_naming_it_after_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(TimedOut, match=r"timed out after 0.2s waiting for the broker"):
        await eventually(lambda: False, "the broker", timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2


def test_a_timeout_is_an_assertion_failure_to_pytest() -> None:
    assert issubclass(TimedOut, AssertionError)


async def test_a_condition_already_true_passes_even_with_no_time_left() -> None:
    assert await eventually(lambda: 42, timeout=0) == 42


async def test_an_error_in_the_predicate_is_not_swallowed() -> None:
    def broken() -> bool:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await eventually(broken, timeout=1)
