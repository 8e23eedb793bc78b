"""The ``mqtt`` source against the local Mosquitto: what it reads, the persistent
session, and when it acknowledges."""

from __future__ import annotations

import anyio
import integrator_mqtt
import pytest
from integrator_mqtt.source import MqttSource, MqttSourceOptions
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from integrator.components import Context
from integrator.errors import StoreError
from integrator.testing import eventually, read_jsonl


def make_source(topic: str, client_id: str, **options) -> MqttSource:
    return MqttSource(
        MqttSourceOptions(topics=[topic], client_id=client_id, **options), Context(route="r")
    )


def properties(**values) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


async def run_once(source: MqttSource, intake) -> None:
    """Start the source (connect, subscribe), then stop it: the session stays at the broker."""
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        tg.cancel_scope.cancel()


async def test_messages_reach_a_file_sink_with_their_id_headers_and_attributes(
    run_route, publisher, topic, client_id, tmp_path
):
    name, out = topic(), tmp_path / "out.jsonl"
    async with run_route(
        f"""
        [routes.r]
        source = {{ type = "mqtt", topics = ["{name}/#"], client_id = "{client_id()}" }}
        sinks = [{{ type = "file", path = "{out}" }}]
        """,
        integrator_mqtt,
    ) as daemon:
        async with publisher() as client:
            await client.publish(
                f"{name}/orders",
                b'{"order": 7}',
                qos=1,
                properties=properties(
                    UserProperty=[("message_id", "order-7"), ("tenant", "acme")],
                    ContentType="application/json",
                ),
            )
            await client.publish(f"{name}/plain", b"42", qos=1)
        await daemon.wait_delivered("r", 2)

    order, plain = sorted(read_jsonl(out), key=lambda m: m["id"] != "order-7")  # any order on disk
    assert (order["id"], order["body"]) == ("order-7", {"order": 7})
    assert order["headers"] == {"tenant": "acme", "content-type": "application/json"}
    assert order["attributes"] == {"topic": f"{name}/orders", "qos": 1, "retain": False}
    assert plain["body"] == 42


async def test_messages_published_while_the_daemon_is_away_arrive_when_it_is_back(
    publisher, topic, client_id, intake
):
    name = topic()
    source = make_source(name, client_id())
    await run_once(source, intake)  # subscribe; the session outlives the connection

    async with publisher() as client:
        for n in range(3):
            await client.publish(name, str(n).encode(), qos=1)

    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        await eventually(lambda: len(intake.committed) == 3, "the messages kept in the session")
        tg.cancel_scope.cancel()
    assert sorted(m.body for m in intake.committed) == [0, 1, 2]


async def test_a_message_is_acknowledged_only_after_the_commit(publisher, topic, client_id, intake):
    name = topic()
    source = make_source(name, client_id())
    intake.fail = StoreError("disk full")
    with pytest.RaisesGroup(StoreError), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(source.run, intake)
            async with publisher() as client:
                id_property = properties(UserProperty=[("message_id", "m-1")])
                await client.publish(name, b'"kept"', qos=1, properties=id_property)

    intake.fail = None  # the store is back: the broker sends the unacknowledged message again
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        await eventually(lambda: intake.committed, "the message sent again")
        await anyio.sleep(0.1)  # let the PUBACK go out
        tg.cancel_scope.cancel()
    assert [(m.id, m.body) for m in intake.committed] == [("m-1", "kept")]

    intake.committed.clear()  # acknowledged this time: a new connection gets nothing
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert intake.committed == []


async def test_nothing_is_read_while_the_engine_refuses_intake(publisher, topic, client_id, intake):
    source = make_source(topic(), client_id())
    intake.pause()  # the store is above its high-water mark
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        async with publisher() as client:
            await client.publish(source.options.topics[0], b"1", qos=1)
        await anyio.sleep(0.3)
        assert intake.committed == []

        intake.resume()
        await eventually(lambda: intake.committed, "the message once intake resumes")
        tg.cancel_scope.cancel()


async def test_mqtt_3_1_1_keeps_the_session_too(publisher, topic, client_id, intake):
    source = make_source(topic(), client_id(), protocol="3.1.1")
    await run_once(source, intake)
    async with publisher() as client:
        await client.publish(source.options.topics[0], b'{"v": 3}', qos=1)

    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        await eventually(lambda: intake.committed, "the message kept in the session")
        tg.cancel_scope.cancel()
    assert [m.body for m in intake.committed] == [{"v": 3}]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"topics": [], "client_id": "a"}, "topics"),
        ({"topics": ["t"], "client_id": ""}, "client_id"),
        ({"topics": ["t"], "client_id": "a", "url": "http://x"}, "mqtt://"),
    ],
)
def test_invalid_options_are_refused(options, problem):
    with pytest.raises(ValueError, match=problem):
        MqttSourceOptions(**options).validate()


async def test_a_json_body_is_handed_to_the_store_as_the_text_received(
    publisher, topic, client_id, intake
):
    source = make_source(topic(), client_id())
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        async with publisher() as client:
            for message_id, payload in (("json", b'{"order": 7}'), ("text", b"plain words")):
                id_property = properties(UserProperty=[("message_id", message_id)])
                await client.publish(
                    source.options.topics[0], payload, qos=1, properties=id_property
                )
        await eventually(lambda: len(intake.committed) == 2, "both messages")
        tg.cancel_scope.cancel()
    texts = {m.id: text for m, text in zip(intake.offered, intake.offered_json, strict=True)}
    assert texts == {"json": b'{"order": 7}', "text": None}
