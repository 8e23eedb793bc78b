"""``kill -9`` between receiving a message and acknowledging it: the message is not lost.

The daemon runs as a real ``integrator run`` subprocess. The test holds the store's
SQLite file locked so that the commit of the received message hangs, which pins the
daemon exactly between the delivery and the ack; then it kills the daemon, releases
the lock and starts a new daemon, which must deliver the message.
"""

from __future__ import annotations

import aio_pika

from integrator.testing import StoreLock, daemon_config, eventually, read_jsonl


async def test_a_message_received_but_not_acknowledged_survives_kill_9(
    tmp_path, amqp_channel, queue_name, daemon_process, depth
):
    queue, out, state = queue_name(), tmp_path / "out.jsonl", tmp_path / "state"
    config = tmp_path / "integrator.toml"
    routes = f"""
        [routes.r]
        source = {{ type = "amqp", url = "amqp://guest:guest@127.0.0.1:5672/", queue = "{queue}" }}
        sinks = [{{ type = "file", path = "{out}" }}]
    """
    config.write_text(daemon_config(routes, state, shutdown_timeout="2s", store_busy_timeout=30))

    async def consumers() -> int:
        try:
            declared = await amqp_channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            await amqp_channel.reopen()  # the broker closes the channel on a failed passive declare
            return 0
        return int(declared.declaration_result.consumer_count or 0)

    async def ready_messages() -> int:
        return await depth(amqp_channel, queue)

    first = daemon_process(config)
    await first.wait_until(lambda: _equals(consumers(), 1), "the daemon to start consuming")

    with StoreLock(state):
        await amqp_channel.default_exchange.publish(
            aio_pika.Message(b'{"order": 42}', message_id="order-42"), routing_key=queue
        )
        await eventually(lambda: _equals(ready_messages(), 0), "the daemon to receive the message")
        first.kill()
    await eventually(lambda: _equals(ready_messages(), 1), "the broker to requeue the message")
    assert read_jsonl(out) == []

    second = daemon_process(config)
    await second.wait_until(lambda: read_jsonl(out), "the message delivered after the restart")
    assert await second.stop() == 0, second.output()
    assert await ready_messages() == 0, "the redelivered message was not acknowledged"

    (message,) = read_jsonl(out)
    assert (message["id"], message["body"]) == ("order-42", {"order": 42})
    assert message["attributes"]["redelivered"] is True


async def _equals(value, expected) -> bool:
    return await value == expected
