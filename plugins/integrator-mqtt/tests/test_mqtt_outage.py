"""The broker going away while the daemon runs: it reconnects, and nothing is lost.

The outage is made by cutting a loopback proxy between the daemon and Mosquitto;
the test itself talks to Mosquitto directly, so it can keep publishing during the
outage, and the daemon's persistent session keeps those messages at the broker.
"""

from __future__ import annotations

import integrator_mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from integrator.engine.health import State
from integrator.testing import eventually, read_jsonl
from integrator.testing.scenarios import sink_survives_an_outage


async def publish(client, topic: str, n: int) -> None:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("message_id", f"m-{n}")]
    await client.publish(topic, str(n).encode(), qos=1, properties=properties)


async def test_the_source_reconnects_and_gets_what_was_published_during_the_outage(
    run_route, publisher, mqtt_proxy, topic, client_id, tmp_path
):
    name, out = topic(), tmp_path / "out.jsonl"
    async with (
        mqtt_proxy() as proxy,
        run_route(
            f"""
            [routes.r]
            sinks = [{{ type = "file", path = "{out}" }}]
            dedupe_window = "1m"  # a PUBACK lost in the cut means a redelivery

            [routes.r.source]
            type = "mqtt"
            url = "mqtt://{proxy.host_port}"
            topics = ["{name}"]
            client_id = "{client_id()}"
            timeout = "2s"
            """,
            integrator_mqtt,
        ) as daemon,
        publisher() as client,
    ):
        health = daemon.services.health.component("r/source")
        for n in range(3):
            await publish(client, name, n)
        await daemon.wait_delivered("r", 3)

        proxy.cut()
        await eventually(lambda: health.state is State.FAILING, "the source to report the outage")
        assert "MqttUnavailable" in health.last_error
        for n in range(3, 6):
            await publish(client, name, n)

        proxy.restore()
        await daemon.wait_delivered("r", 6, timeout=15)
        await eventually(lambda: health.state is State.RUNNING, "the source to run again")

    assert sorted(m["body"] for m in read_jsonl(out)) == list(range(6))


async def test_the_sink_retries_through_the_outage_and_delivers_every_message(
    run_route, publisher, mqtt_proxy, topic
):
    name = topic()
    async with publisher() as subscriber:
        await subscriber.subscribe(name, qos=1)
        async with mqtt_proxy() as proxy:
            sink = f"""
                type = "mqtt"
                url = "mqtt://{proxy.host_port}"
                topic = "{name}"
                timeout = "1s"
            """
            await sink_survives_an_outage(run_route, proxy, sink, integrator_mqtt)

        ids = set()
        async for message in subscriber.messages:
            ids.update(v for k, v in message.properties.UserProperty if k == "message_id")
            if len(ids) == 30:
                break
    assert len(ids) == 30  # every message arrived (a lost PUBACK may add a duplicate)
