"""``RecordingIntake``: an intake whose commits a test holds, fails and reads."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from integrator import Message
from integrator.builtin.timer import TimerOptions, TimerSource
from integrator.components import Context
from integrator.errors import StoreError
from integrator.testing import RecordingIntake


def messages(*ids: str) -> list[Message]:
    return [Message(body=i, id=i) for i in ids]


async def test_submitted_messages_are_committed_in_order_and_reported_new() -> None:
    intake = RecordingIntake()
    assert await intake.submit(messages("a", "b")) == [True, True]
    assert await intake.submit(messages("c")) == [True]
    assert [m.id for m in intake.committed] == ["a", "b", "c"]
    assert intake.submitting.is_set()


async def test_a_gate_holds_the_commit_until_it_is_set() -> None:
    intake = RecordingIntake()
    intake.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(intake.submit, messages("a"))
        with anyio.fail_after(2):
            await intake.submitting.wait()
        await anyio.sleep(0.05)
        assert intake.committed == [] and [m.id for m in intake.offered] == ["a"]
        intake.gate.set()
    assert [m.id for m in intake.committed] == ["a"]


async def test_a_failing_commit_raises_and_commits_nothing() -> None:
    intake = RecordingIntake()
    intake.fail = StoreError("disk full")
    with pytest.raises(StoreError, match="disk full"):
        await intake.submit(messages("a"))
    assert intake.committed == []
    assert [m.id for m in intake.offered] == ["a"]


async def test_pause_refuses_intake_until_resume() -> None:
    intake = RecordingIntake()
    assert intake.accepting
    intake.pause()
    assert not intake.accepting
    with anyio.move_on_after(0.05) as waited:
        await intake.wait_accepting()
    assert waited.cancelled_caught, "wait_accepting returned while paused"

    async with anyio.create_task_group() as tg:
        tg.start_soon(intake.wait_accepting)
        await anyio.sleep(0.01)
        intake.resume()
    assert intake.accepting


async def test_checkpoints_start_as_given_and_every_save_is_recorded() -> None:
    intake = RecordingIntake(checkpoints={"cursor": 5})
    assert await intake.load_checkpoint("cursor") == 5
    assert await intake.load_checkpoint("other") is None
    await intake.save_checkpoint("cursor", 7)
    await intake.save_checkpoint("cursor", 9)
    assert await intake.load_checkpoint("cursor") == 9
    assert intake.saved == [("cursor", 7), ("cursor", 9)]


async def test_on_submit_sees_each_batch_before_it_is_committed() -> None:
    seen: list[tuple[list[str], int]] = []
    intake: RecordingIntake

    async def look(batch: Sequence[Message]) -> None:
        seen.append(([m.id for m in batch], len(intake.committed)))

    intake = RecordingIntake(on_submit=look)
    await intake.submit(messages("a"))
    await intake.submit(messages("b", "c"))
    assert seen == [(["a"], 0), (["b", "c"], 1)]


async def test_wait_committed_returns_once_enough_are_committed() -> None:
    intake = RecordingIntake()
    async with anyio.create_task_group() as tg:

        async def later() -> None:
            await anyio.sleep(0.05)
            await intake.submit(messages("a", "b"))

        tg.start_soon(later)
        committed = await intake.wait_committed(2, timeout=2)
    assert [m.id for m in committed] == ["a", "b"]


async def test_wait_committed_fails_saying_how_many_arrived() -> None:
    intake = RecordingIntake()
    await intake.submit(messages("a"))
    with pytest.raises(AssertionError, match=r"2 committed messages \(1 so far\)"):
        await intake.wait_committed(2, timeout=0.05)


async def test_a_real_source_runs_against_it(intake: RecordingIntake) -> None:
    """The fixture gives a fresh one; a built-in source accepts it as its intake."""
    source = TimerSource(TimerOptions(interval=0.01, count=3, body="tick"), Context(route="r"))
    with anyio.fail_after(5):
        await source.run(intake)
    assert [m.body for m in intake.committed] == ["tick"] * 3
    assert intake.saved == [("tick", 1), ("tick", 2), ("tick", 3)]


async def test_json_bodies_that_do_not_match_the_bodies_fail_the_test() -> None:
    intake = RecordingIntake()
    message = Message(body={"n": 1}, id="a")
    assert await intake.submit([message], json_bodies=[b'{"n": 1}']) == [True]
    with pytest.raises(AssertionError, match=r"json_bodies\[0\] does not decode to message a"):
        await intake.submit([message], json_bodies=[b'{"n": 2}'])
    with pytest.raises(AssertionError, match="does not decode"):  # True is not 1 here
        await intake.submit([Message(body={"flag": True})], json_bodies=[b'{"flag": 1}'])
    with pytest.raises(AssertionError, match="1 json_bodies for 2 messages"):
        await intake.submit([message, message], json_bodies=[None])


async def test_the_json_text_handed_over_with_each_message_is_recorded() -> None:
    intake = RecordingIntake()
    await intake.submit(
        [Message(body=1, id="a"), Message(body="x", id="b")], json_bodies=[b"1", None]
    )
    await intake.submit([Message(body=2, id="c")])  # a source that hands over no text
    assert intake.offered_json == [b"1", None, None]
    assert [m.id for m in intake.offered] == ["a", "b", "c"]
