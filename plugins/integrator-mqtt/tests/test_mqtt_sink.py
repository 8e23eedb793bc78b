"""The ``mqtt`` sink, read back with a subscriber of the test's own."""

from __future__ import annotations

import json

import anyio
import integrator_mqtt
import pytest
from integrator_mqtt.sink import MqttSink, MqttSinkOptions

from integrator import DeliveryError, Message
from integrator.components import Context


async def collect(client, count: int) -> list:
    received = []
    with anyio.fail_after(10):
        async for message in client.messages:
            received.append(message)
            if len(received) == count:
                return received
    return received


async def test_a_route_publishes_each_message_with_its_id(run_route, publisher, topic):
    name = topic()
    async with publisher() as subscriber:
        await subscriber.subscribe(name, qos=1)
        async with run_route(
            f"""
            [routes.ticks]
            source = {{ type = "timer", interval = "10ms", count = 3, body = {{ hello = "mqtt" }} }}
            sinks = [{{ type = "mqtt", topic = "{name}", qos = 1 }}]
            """,
            integrator_mqtt,
        ) as daemon:
            await daemon.wait_delivered("ticks", 3)
        received = await collect(subscriber, 3)

    ids = set()
    for message in received:
        assert json.loads(message.payload) == {"hello": "mqtt"}
        assert message.properties.ContentType == "application/json"
        ids.update(value for key, value in message.properties.UserProperty if key == "message_id")
    assert len(ids) == 3


async def test_qos_2_headers_and_bytes_are_carried(publisher, topic):
    name = topic()
    sink = MqttSink(MqttSinkOptions(topic=name, qos=2), Context(route="r"))
    async with publisher() as subscriber:
        await subscriber.subscribe(name, qos=2)
        await sink.open()
        try:
            await sink.deliver(Message(id="m-1", body=b"\x00raw", headers={"tenant": "acme"}))
        finally:
            await sink.close()
        (message,) = await collect(subscriber, 1)
    assert (message.payload, message.qos) == (b"\x00raw", 2)
    assert message.properties.UserProperty == [("tenant", "acme"), ("message_id", "m-1")]


async def test_a_body_over_max_size_is_refused_without_retry(topic):
    sink = MqttSink(MqttSinkOptions(topic=topic(), max_size=8), Context(route="r"))
    await sink.open()
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body="nine bytes"))
    finally:
        await sink.close()
    assert caught.value.retriable is False


async def test_open_fails_when_the_broker_cannot_be_reached(topic):
    sink = MqttSink(
        MqttSinkOptions(topic=topic(), url="mqtt://user:s3cret-pass@127.0.0.1:1", timeout=1),
        Context(route="r"),
    )
    with pytest.raises(integrator_mqtt.MqttUnavailable) as caught:
        await sink.open()
    assert "s3cret-pass" not in str(caught.value)


@pytest.mark.parametrize("bad", ["a/+/b", "a/#", ""])
def test_a_topic_with_wildcards_is_refused(bad):
    with pytest.raises(ValueError, match="wildcards"):
        MqttSinkOptions(topic=bad).validate()
