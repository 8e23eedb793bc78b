"""The nats source acks a message only once the engine has committed it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from integrator_nats import NatsError, NatsSource, NatsSourceOptions

from integrator import Message
from integrator.components import Context
from integrator.config import convert
from integrator.errors import StoreError
from integrator.testing import RecordingIntake, eventually

pytestmark = pytest.mark.service("nats")


class WatchingIntake(RecordingIntake):
    """A recording intake that notes the consumer's unacked count as each submit begins."""

    def __init__(self, streams: Any, stream: str, durable: str) -> None:
        super().__init__(on_submit=self._look)
        self.streams, self.stream, self.durable = streams, stream, durable
        self.pending_during_submit: list[int] = []

    async def _look(self, _batch: Sequence[Message]) -> None:
        info = await self.streams.js.consumer_info(self.stream, self.durable)
        self.pending_during_submit.append(info.num_ack_pending)


def source(stream: str, **options: Any) -> NatsSource:
    values = {"stream": stream, "durable": "watched", "fetch_wait": "200ms", **options}
    return NatsSource(convert(values, NatsSourceOptions), Context(route="unit"))


async def consumer_pending(streams: Any, stream: str) -> tuple[int, int]:
    info = await streams.js.consumer_info(stream, "watched")
    return info.num_ack_pending, info.ack_floor.stream_seq


async def test_a_message_is_unacked_while_submitted_and_acked_after(
    streams: Any,
) -> None:
    stream = await streams.create("ack")
    await streams.publish(f"{stream}.x", b"{}")
    intake = WatchingIntake(streams, stream, "watched")
    async with anyio.create_task_group() as tg:
        await tg.start(source(stream).run, intake)
        await intake.wait_committed(1, timeout=5)

        async def acked() -> bool:
            return await consumer_pending(streams, stream) == (0, 1)

        await eventually(acked, "the ack", timeout=5)
        tg.cancel_scope.cancel()
    assert intake.pending_during_submit == [1]


async def test_a_batch_the_store_refused_is_nakked_and_comes_back_soon(streams: Any) -> None:
    stream = await streams.create("nak")
    await streams.publish(f"{stream}.x", b'"first try fails"')
    failing = WatchingIntake(streams, stream, "watched")
    failing.fail = StoreError("the store is full")
    # ack_wait is long, so only the NAK (with its short delay) can bring it back quickly.
    options = {"ack_wait": "60s", "nak_delay": "300ms"}
    with pytest.raises(StoreError), anyio.fail_after(5):
        await source(stream, **options).run(failing)
    assert failing.pending_during_submit == [1]

    working = WatchingIntake(streams, stream, "watched")
    async with anyio.create_task_group() as tg:
        await tg.start(source(stream, **options).run, working)
        await working.wait_committed(1, timeout=5)
        tg.cancel_scope.cancel()
    (message,) = working.committed
    assert message.body == "first try fails"
    assert message.attributes["delivered"] == 2
    assert message.id == f"{stream}:1"  # the same id as the first delivery: dedupe works


async def test_a_missing_stream_is_an_error_that_names_it(streams: Any) -> None:
    intake = RecordingIntake()
    with pytest.raises(NatsError, match="'no-such-stream' does not exist"), anyio.fail_after(5):
        await source("no-such-stream").run(intake)


async def test_an_idle_consumer_keeps_waiting_for_messages(streams: Any) -> None:
    stream = await streams.create("idle")
    intake = WatchingIntake(streams, stream, "watched")
    async with anyio.create_task_group() as tg:
        # batch = 1 takes nats-py's single-message path, which times out differently.
        await tg.start(source(stream, batch=1, fetch_wait="100ms").run, intake)
        await anyio.sleep(0.35)  # several empty pulls
        await streams.publish(f"{stream}.x", b"late")
        await intake.wait_committed(1, timeout=5)
        tg.cancel_scope.cancel()
    assert [m.body for m in intake.committed] == [b"late"]


async def test_a_json_body_is_handed_to_the_store_as_the_text_received(streams: Any) -> None:
    stream = await streams.create("json")
    await streams.publish(f"{stream}.x", b'{"order": 7}')
    await streams.publish(f"{stream}.x", b"plain words")
    intake = RecordingIntake()
    async with anyio.create_task_group() as tg:
        await tg.start(source(stream).run, intake)
        await intake.wait_committed(2, timeout=5)
        tg.cancel_scope.cancel()
    assert intake.offered_json == [b'{"order": 7}', None]
    assert [m.body for m in intake.offered] == [{"order": 7}, b"plain words"]
