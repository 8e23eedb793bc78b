"""The broker going away while the daemon runs: it reconnects, and nothing is lost.

The outage is made by cutting a loopback proxy between the daemon and RabbitMQ; the
test itself talks to RabbitMQ directly, so it can keep publishing during the outage.
"""

from __future__ import annotations

import aio_pika
import integrator_amqp

from integrator.engine.health import State
from integrator.testing import eventually, read_jsonl
from integrator.testing.scenarios import sink_survives_an_outage


async def publish(channel, queue: str, body: str) -> None:
    message = aio_pika.Message(body.encode(), message_id=f"m-{body}")
    await channel.default_exchange.publish(message, routing_key=queue)


async def test_the_source_reconnects_and_reads_what_was_published_during_the_outage(
    run_route, amqp_channel, amqp_proxy, queue_name, tmp_path, depth
):
    queue, out = queue_name(), tmp_path / "out.jsonl"
    async with (
        amqp_proxy() as proxy,
        run_route(
            f"""
            [routes.r]
            sinks = [{{ type = "file", path = "{out}" }}]
            dedupe_window = "1m"  # an ack lost in the cut means a redelivery

            [routes.r.source]
            type = "amqp"
            url = "amqp://guest:guest@{proxy.host_port}/"
            queue = "{queue}"
            timeout = "2s"
            """,
            integrator_amqp,
        ) as daemon,
    ):
        health = daemon.services.health.component("r/source")
        for n in range(3):
            await publish(amqp_channel, queue, str(n))
        await daemon.wait_delivered("r", 3)

        proxy.cut()
        await eventually(lambda: health.state is State.FAILING, "the source to report the outage")
        assert "AmqpUnavailable" in health.last_error
        for n in range(3, 6):
            await publish(amqp_channel, queue, str(n))

        proxy.restore()
        await daemon.wait_delivered("r", 6, timeout=15)
        await eventually(lambda: health.state is State.RUNNING, "the source to run again")

    assert sorted(m["body"] for m in read_jsonl(out)) == list(range(6))
    assert await depth(amqp_channel, queue) == 0


async def test_the_sink_retries_through_the_outage_and_delivers_every_message(
    run_route, amqp_channel, amqp_proxy, queue_name
):
    queue = queue_name()
    declared = await amqp_channel.declare_queue(queue, durable=True)
    async with amqp_proxy() as proxy:
        sink = f"""
            type = "amqp"
            url = "amqp://guest:guest@{proxy.host_port}/"
            routing_key = "{queue}"
            timeout = "2s"
        """
        await sink_survives_an_outage(run_route, proxy, sink, integrator_amqp)

    ids = set()
    while (message := await declared.get(fail=False, no_ack=True)) is not None:
        ids.add(message.message_id)
    assert len(ids) == 30  # every message arrived (a lost confirm may add a duplicate)
