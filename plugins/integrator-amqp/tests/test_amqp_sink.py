"""The ``amqp`` sink, read back with aio-pika."""

from __future__ import annotations

import json
import uuid

import aio_pika
import integrator_amqp
import pytest
from integrator_amqp.sink import AmqpSink, AmqpSinkOptions

from integrator import DeliveryError, Message
from integrator.components import Context

URL = "amqp://guest:guest@127.0.0.1:5672/"


async def drain(channel, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    declared = await channel.declare_queue(queue, durable=True)
    received = []
    while (message := await declared.get(fail=False, no_ack=True)) is not None:
        received.append(message)
    return received


async def open_sink(**options) -> AmqpSink:
    sink = AmqpSink(AmqpSinkOptions(url=URL, **options), Context(route="r"))
    await sink.open()
    return sink


async def test_a_route_publishes_persistent_messages_with_their_ids(
    run_route, amqp_channel, queue_name
):
    queue = queue_name()
    await amqp_channel.declare_queue(queue, durable=True)
    async with run_route(
        f"""
        [routes.ticks]
        source = {{ type = "timer", interval = "10ms", count = 3, body = {{ hello = "amqp" }} }}
        sinks = [{{ type = "amqp", url = "{URL}", routing_key = "{queue}" }}]
        """,
        integrator_amqp,
    ) as daemon:
        await daemon.wait_delivered("ticks", 3)

    received = await drain(amqp_channel, queue)
    assert len(received) == 3
    assert len({m.message_id for m in received}) == 3
    for message in received:
        assert json.loads(message.body) == {"hello": "amqp"}
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/json"


async def test_headers_and_body_types_are_kept(amqp_channel, queue_name):
    queue = queue_name()
    await amqp_channel.declare_queue(queue, durable=True)
    sink = await open_sink(routing_key=queue)
    try:
        await sink.deliver(Message(id="m-1", body=b"\x00raw", headers={"tenant": "acme"}))
        await sink.deliver(Message(id="m-2", body="text"))
    finally:
        await sink.close()
    raw, text = await drain(amqp_channel, queue)
    assert (raw.message_id, raw.body, raw.headers) == ("m-1", b"\x00raw", {"tenant": "acme"})
    assert raw.content_type == "application/octet-stream"
    assert (text.message_id, text.body, text.content_type) == (
        "m-2",
        b"text",
        "text/plain; charset=utf-8",
    )


async def test_an_unroutable_message_is_retried_not_dropped(queue_name):
    sink = await open_sink(routing_key=queue_name())  # no such queue
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body=1))
    finally:
        await sink.close()
    assert caught.value.retriable is True
    assert "NO_ROUTE" in caught.value.reason


async def test_a_missing_exchange_is_retried_and_works_once_it_exists(amqp_channel, queue_name):
    exchange, queue = f"integrator-test-{uuid.uuid4().hex[:12]}", queue_name()
    sink = await open_sink(exchange=exchange, routing_key="k")
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body=1))
        assert caught.value.retriable is True
        assert "NOT_FOUND" in caught.value.reason

        declared = await amqp_channel.declare_exchange(exchange, auto_delete=True)
        bound = await amqp_channel.declare_queue(queue, durable=True)
        await bound.bind(declared, routing_key="k")
        await sink.deliver(Message(body=2))  # on a new channel: the broker closed the old one
    finally:
        await sink.close()
    (message,) = await drain(amqp_channel, queue)
    assert message.body == b"2"


async def test_a_body_over_max_size_is_refused_without_retry(queue_name):
    sink = await open_sink(routing_key=queue_name(), max_size=8)
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body="nine bytes"))
    finally:
        await sink.close()
    assert caught.value.retriable is False


async def test_open_fails_when_the_broker_cannot_be_reached():
    sink = AmqpSink(
        AmqpSinkOptions(url="amqp://guest:guest@127.0.0.1:1/", timeout=1), Context(route="r")
    )
    with pytest.raises(integrator_amqp.AmqpUnavailable) as caught:
        await sink.open()
    assert "guest:guest" not in str(caught.value)


async def test_wrong_credentials_are_reported_without_the_password(amqp_channel):
    sink = AmqpSink(
        AmqpSinkOptions(url="amqp://guest:wrong-password@127.0.0.1:5672/", timeout=5),
        Context(route="r"),
    )
    with pytest.raises(integrator_amqp.AmqpUnavailable) as caught:
        await sink.open()
    assert "wrong-password" not in str(caught.value)
