"""The ``amqp`` source against the local RabbitMQ: what it reads, and when it acknowledges."""

from __future__ import annotations

import aio_pika
import anyio
import integrator_amqp
import pytest
from integrator_amqp.source import AmqpSource, AmqpSourceOptions

from integrator.components import Context
from integrator.errors import StoreError
from integrator.testing import eventually, read_jsonl

URL = "amqp://guest:guest@127.0.0.1:5672/"


def make_source(queue: str, **options) -> AmqpSource:
    return AmqpSource(AmqpSourceOptions(url=URL, queue=queue, **options), Context(route="r"))


async def publish(channel, queue: str, body: bytes, **properties) -> None:
    await channel.default_exchange.publish(aio_pika.Message(body, **properties), routing_key=queue)


async def test_messages_reach_a_file_sink_with_their_id_headers_and_attributes(
    run_route, amqp_channel, queue_name, tmp_path
):
    queue, out = queue_name(), tmp_path / "out.jsonl"
    async with run_route(
        f"""
        [routes.r]
        source = {{ type = "amqp", url = "{URL}", queue = "{queue}" }}
        sinks = [{{ type = "file", path = "{out}" }}]
        """,
        integrator_amqp,
    ) as daemon:
        await publish(
            amqp_channel,
            queue,
            b'{"order": 7}',
            message_id="order-7",
            content_type="application/json",
            headers={"tenant": "acme", "attempt": 2},
        )
        await publish(amqp_channel, queue, b"123", content_type="text/plain")
        await daemon.wait_delivered("r", 2)

    order, text = sorted(read_jsonl(out), key=lambda m: m["id"] != "order-7")  # any order on disk
    assert order["id"] == "order-7"
    assert order["body"] == {"order": 7}
    assert order["headers"] == {
        "tenant": "acme",
        "attempt": "2",
        "content-type": "application/json",
    }
    assert order["attributes"] == {
        "queue": queue,
        "exchange": "",
        "routing_key": queue,
        "redelivered": False,
    }
    assert text["body"] == "123", "a text/plain body stays text even when it looks like JSON"


async def test_a_failed_commit_leaves_the_message_in_the_queue_for_the_next_run(
    amqp_channel, queue_name, intake
):
    queue = queue_name()
    intake.fail = StoreError("disk full")
    source = make_source(queue)
    with pytest.RaisesGroup(StoreError), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(source.run, intake)
            await publish(amqp_channel, queue, b'"kept"', message_id="m-1")

    intake.fail = None  # the store is back: the broker delivers the message again
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        await eventually(lambda: intake.committed, "the redelivered message")
        tg.cancel_scope.cancel()
    (message,) = intake.committed
    assert (message.id, message.body) == ("m-1", "kept")
    assert message.attributes["redelivered"] is True


async def test_a_committed_message_is_acknowledged(amqp_channel, queue_name, intake, depth):
    queue = queue_name()
    intake.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(make_source(queue).run, intake)
        await publish(amqp_channel, queue, b"1")
        with anyio.fail_after(5):
            await intake.submitting.wait()
        intake.gate.set()
        await eventually(lambda: intake.committed, "the commit")
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()  # closing the connection requeues whatever is unacknowledged
    await anyio.sleep(0.1)
    assert await depth(amqp_channel, queue) == 0


async def test_under_backpressure_only_prefetch_messages_leave_the_queue(
    amqp_channel, queue_name, intake, depth
):
    queue = queue_name()
    intake.pause()  # the store is above its high-water mark
    async with anyio.create_task_group() as tg:
        await tg.start(make_source(queue, prefetch=2).run, intake)
        for n in range(5):
            await publish(amqp_channel, queue, str(n).encode())
        await anyio.sleep(0.3)
        assert await depth(amqp_channel, queue) == 3, "the broker holds all but the prefetch"
        assert intake.committed == []

        intake.resume()
        await eventually(lambda: len(intake.committed) == 5, "every message once intake resumes")
        tg.cancel_scope.cancel()
    assert sorted(m.body for m in intake.committed) == [0, 1, 2, 3, 4]


async def test_consuming_a_missing_queue_without_declare_fails_with_the_reason(queue_name, intake):
    source = make_source(queue_name(), declare=False)
    with pytest.raises(integrator_amqp.AmqpUnavailable, match="NOT_FOUND"):
        await source.run(intake)


async def test_a_json_body_is_handed_to_the_store_as_the_text_received(
    amqp_channel, queue_name, intake
):
    queue = queue_name()
    async with anyio.create_task_group() as tg:
        await tg.start(make_source(queue).run, intake)
        await publish(amqp_channel, queue, b'{"order": 7}', message_id="json")
        await publish(amqp_channel, queue, b"plain words", message_id="text")
        await eventually(lambda: len(intake.committed) == 2, "both messages")
        tg.cancel_scope.cancel()
    texts = {m.id: text for m, text in zip(intake.offered, intake.offered_json, strict=True)}
    assert texts == {"json": b'{"order": 7}', "text": None}
