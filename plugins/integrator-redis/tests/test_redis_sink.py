"""The ``redis_stream`` and ``redis_publish`` sinks, read back with redis-py."""

from __future__ import annotations

import json

import anyio
import integrator_redis
import pytest
from integrator_redis.connection import RedisUnavailable
from integrator_redis.sink import (
    PublishSinkOptions,
    RedisPublishSink,
    RedisStreamSink,
    StreamSinkOptions,
)

from integrator import DeliveryError, Message
from integrator.components import Context


async def test_a_route_appends_each_message_to_the_stream(run_route, redis_client, key):
    stream = key()
    async with run_route(
        f"""
        [routes.ticks]
        source = {{ type = "timer", interval = "10ms", count = 3, body = {{ hello = "redis" }} }}
        sinks = [{{ type = "redis_stream", stream = "{stream}" }}]
        """,
        integrator_redis,
    ) as daemon:
        await daemon.wait_delivered("ticks", 3)

    entries = await redis_client.xrange(stream)
    assert len(entries) == 3
    for _entry_id, fields in entries:
        assert json.loads(fields[b"body"]) == {"hello": "redis"}
    assert len({fields[b"message_id"] for _id, fields in entries}) == 3


async def open_stream_sink(stream: str, **options) -> RedisStreamSink:
    sink = RedisStreamSink(StreamSinkOptions(stream=stream, **options), Context(route="r"))
    await sink.open()
    return sink


async def test_bodies_and_headers_are_written_as_the_source_reads_them(redis_client, key):
    stream = key()
    sink = await open_stream_sink(stream)
    try:
        await sink.deliver(Message(id="m-1", body=b"\x00raw", headers={"tenant": "acme"}))
        await sink.deliver(Message(id="m-2", body="text"))
    finally:
        await sink.close()
    (_, first), (_, second) = await redis_client.xrange(stream)
    assert first == {b"tenant": b"acme", b"message_id": b"m-1", b"body": b"\x00raw"}
    assert second == {b"message_id": b"m-2", b"body": b"text"}


async def test_maxlen_trims_the_stream_approximately(redis_client, key):
    stream = key()
    sink = await open_stream_sink(stream, maxlen=10)
    try:
        for n in range(300):
            await sink.deliver(Message(body=n))
    finally:
        await sink.close()
    assert 10 <= await redis_client.xlen(stream) < 300


async def test_a_key_of_the_wrong_type_is_a_non_retriable_error(redis_client, key):
    stream = key()
    await redis_client.set(stream, "a string, not a stream")
    sink = await open_stream_sink(stream)
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body=1))
    finally:
        await sink.close()
    assert caught.value.retriable is False
    assert "WRONGTYPE" in caught.value.reason


async def test_a_body_over_max_size_is_refused_without_retry(key):
    sink = await open_stream_sink(key(), max_size=8)
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body="nine bytes"))
    finally:
        await sink.close()
    assert caught.value.retriable is False


async def test_open_fails_when_redis_cannot_be_reached(key):
    sink = RedisStreamSink(
        StreamSinkOptions(stream=key(), url="redis://127.0.0.1:1/0", timeout=1), Context(route="r")
    )
    with pytest.raises(RedisUnavailable):
        await sink.open()


async def test_publish_reaches_a_subscriber(redis_client, key):
    channel = key("channel")
    sink = RedisPublishSink(PublishSinkOptions(channel=channel), Context(route="r"))
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        await sink.open()
        try:
            await sink.deliver(Message(body={"event": "created"}))
        finally:
            await sink.close()
        with anyio.fail_after(5):
            received = None
            while received is None:
                received = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert json.loads(received["data"]) == {"event": "created"}


async def test_publish_without_subscribers_is_retried_when_subscribers_are_required(key):
    sink = RedisPublishSink(
        PublishSinkOptions(channel=key("channel"), require_subscribers=True), Context(route="r")
    )
    await sink.open()
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body=1))
    finally:
        await sink.close()
    assert caught.value.retriable is True
