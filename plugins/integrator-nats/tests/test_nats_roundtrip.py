"""The nats source and sink against the machine's JetStream server, through a real daemon."""

from __future__ import annotations

from typing import Any

import pytest
from integrator_nats import NatsSink, NatsSinkOptions

from integrator import DeliveryError, Message
from integrator.components import Context
from integrator.config import convert
from integrator.testing import eventually, read_jsonl

pytestmark = pytest.mark.service("nats")


def route(source_stream: str, sink_subject: str, **extra: str) -> str:
    lines = "\n".join(f"{key} = {value}" for key, value in extra.items())
    return f"""
        [routes.relay]
        sinks = [{{ type = "nats", subject = "{sink_subject}", forward_headers = ["x-trace"] }}]

        [routes.relay.source]
        type = "nats"
        stream = "{source_stream}"
        fetch_wait = "200ms"
        {lines}
    """


async def test_messages_flow_from_one_stream_to_another(streams: Any, run_route: Any) -> None:
    inbound = await streams.create("in")
    outbound = await streams.create("out")
    await streams.publish(f"{inbound}.orders", b'{"order": 1}', **{"Nats-Msg-Id": "order-1"})
    await streams.publish(f"{inbound}.orders", b"not json", **{"X-Trace": "t-2"})

    async with run_route(route(inbound, f"{outbound}.copied"), entrypoints=True) as daemon:
        await daemon.wait_delivered("relay", 2)

    copied = {m.headers["Nats-Msg-Id"]: m for m in await streams.read_all(outbound)}
    assert copied.keys() == {"order-1", f"{inbound}:2"}  # the publisher's id, else stream:seq
    assert copied["order-1"].data == b'{"order":1}'
    assert copied[f"{inbound}:2"].data == b"not json"
    assert copied[f"{inbound}:2"].headers["X-Trace"] == "t-2"  # forwarded as configured
    assert "X-Trace" not in copied["order-1"].headers


async def test_the_source_describes_where_a_message_came_from(
    streams: Any, run_route: Any, tmp_path: Any
) -> None:
    inbound = await streams.create("in")
    await streams.publish(f"{inbound}.a.b", b"[1, 2]", **{"X-Tenant": "acme"})
    out = tmp_path / "out.jsonl"
    config = f"""
        [routes.look]
        sinks = [{{ type = "file", path = "{out}", fsync = "never" }}]

        [routes.look.source]
        type = "nats"
        stream = "{inbound}"
        subject = "{inbound}.a.>"
        fetch_wait = "200ms"
    """
    async with run_route(config, entrypoints=True) as daemon:
        await daemon.wait_delivered("look", 1)

    (seen,) = read_jsonl(out)
    assert seen["id"] == f"{inbound}:1"
    assert seen["body"] == [1, 2]
    assert seen["headers"] == {"X-Tenant": "acme"}
    assert seen["attributes"] | {"published_at": 0} == {
        "subject": f"{inbound}.a.b",
        "stream": inbound,
        "seq": 1,
        "consumer": "integrator-look",
        "delivered": 1,
        "published_at": 0,
    }


async def test_the_consumer_has_acked_everything_once_the_daemon_has_it(
    streams: Any, run_route: Any, tmp_path: Any
) -> None:
    inbound = await streams.create("in")
    for n in range(25):
        await streams.publish(f"{inbound}.n", str(n).encode())
    config = f"""
        [routes.count]
        sinks = [{{ type = "file", path = "{tmp_path / "out.jsonl"}", fsync = "never" }}]

        [routes.count.source]
        type = "nats"
        stream = "{inbound}"
        durable = "counter"
        batch = 10
        fetch_wait = "200ms"
    """
    async with run_route(config, entrypoints=True) as daemon:
        await daemon.wait_delivered("count", 25)

        async def all_acked() -> bool:
            info = await streams.js.consumer_info(inbound, "counter")
            return info.num_ack_pending == 0 and info.ack_floor.stream_seq == 25

        await eventually(all_acked, "every message to be acked", timeout=5)


def sink(subject: str, **options: Any) -> NatsSink:
    opts = convert({"subject": subject, **options}, NatsSinkOptions)
    return NatsSink(opts, Context(route="unit"))


async def test_a_repeated_delivery_is_stored_once_by_the_server(streams: Any) -> None:
    stream = await streams.create("dup")
    nats_sink = sink(f"{stream}.x")
    await nats_sink.open()
    try:
        message = Message(body={"a": 1})
        await nats_sink.deliver(message)
        await nats_sink.deliver(message)  # the engine retried after a lost PubAck
    finally:
        await nats_sink.close()
    stored = await streams.read_all(stream)
    assert len(stored) == 1
    assert stored[0].headers["Nats-Msg-Id"] == message.id


async def test_a_publish_that_no_stream_takes_is_retriable(streams: Any) -> None:
    nats_sink = sink("nowhere.at.all", timeout="500ms")
    await nats_sink.open()
    try:
        with pytest.raises(DeliveryError) as caught:
            await nats_sink.deliver(Message(body="x"))
    finally:
        await nats_sink.close()
    assert caught.value.retriable


async def test_a_publish_the_server_refuses_is_not_retried(streams: Any) -> None:
    stream = await streams.create("strict")
    nats_sink = sink(f"{stream}.x", stream="some-other-stream")
    await nats_sink.open()
    try:
        with pytest.raises(DeliveryError) as caught:
            await nats_sink.deliver(Message(body="x"))
    finally:
        await nats_sink.close()
    assert not caught.value.retriable
    assert "expected stream does not match" in caught.value.reason
