"""``kill -9`` between receiving a QoS 1 message and acknowledging it: the message is not lost.

The daemon runs as a real ``integrator run`` subprocess. The test holds the store's
SQLite file locked so that the commit of the received message hangs, which pins the
daemon between the PUBLISH and its PUBACK; the daemon's debug log shows when the
PUBLISH arrived. Then the test kills the daemon, releases the lock and starts a new
daemon with the same client id, to which the broker must send the message again.
"""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from integrator.testing import StoreLock, daemon_config, read_jsonl


async def test_a_message_received_but_not_acknowledged_survives_kill_9(
    tmp_path, publisher, topic, client_id, daemon_process
):
    name, out, state = topic(), tmp_path / "out.jsonl", tmp_path / "state"
    config = tmp_path / "integrator.toml"
    routes = f"""
        [routes.r]
        source = {{ type = "mqtt", topics = ["{name}"], client_id = "{client_id()}" }}
        sinks = [{{ type = "file", path = "{out}" }}]
    """
    config.write_text(
        daemon_config(
            routes, state, shutdown_timeout="2s", log_level="debug", store_busy_timeout=30
        )
    )

    first = daemon_process(config)
    await first.wait_for_output("mqtt: subscribed")

    with StoreLock(state):
        async with publisher() as client:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("message_id", "reading-1")]
            await client.publish(name, b'{"celsius": 21.5}', qos=1, properties=properties)
        await first.wait_for_output("Received PUBLISH", timeout=10)
        first.kill()
    assert read_jsonl(out) == []

    second = daemon_process(config)
    await second.wait_until(lambda: read_jsonl(out), "the message delivered after the restart")
    assert await second.stop() == 0, second.output()

    (message,) = read_jsonl(out)
    assert (message["id"], message["body"]) == ("reading-1", {"celsius": 21.5})
