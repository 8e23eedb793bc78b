"""Redis going away while the daemon runs: it reconnects, and nothing is lost.

The outage is made by cutting a loopback proxy between the daemon and Redis; the
test itself talks to Redis directly, so it can keep writing during the outage.
"""

from __future__ import annotations

import integrator_redis

from integrator.engine.health import State
from integrator.testing import eventually, read_jsonl
from integrator.testing.scenarios import sink_survives_an_outage


async def test_the_source_reconnects_and_reads_what_was_written_during_the_outage(
    run_route, redis_client, redis_proxy, key, tmp_path
):
    stream, out = key(), tmp_path / "out.jsonl"
    async with (
        redis_proxy() as proxy,
        run_route(
            f"""
            [routes.r]
            sinks = [{{ type = "file", path = "{out}" }}]

            [routes.r.source]
            type = "redis_stream"
            url = "redis://{proxy.host_port}/0"
            stream = "{stream}"
            block = "50ms"
            timeout = "1s"
            """,
            integrator_redis,
        ) as daemon,
    ):
        health = daemon.services.health.component("r/source")
        for n in range(3):
            await redis_client.xadd(stream, {"body": str(n)})
        await daemon.wait_delivered("r", 3)
        await eventually(lambda: _none_pending(redis_client, stream), "the acknowledgements")

        proxy.cut()
        await eventually(lambda: health.state is State.FAILING, "the source to report the outage")
        assert "RedisUnavailable" in health.last_error
        for n in range(3, 6):
            await redis_client.xadd(stream, {"body": str(n)})

        proxy.restore()
        await daemon.wait_delivered("r", 6, timeout=15)
        await eventually(lambda: health.state is State.RUNNING, "the source to run again")

    assert sorted(m["body"] for m in read_jsonl(out)) == list(range(6))
    assert (await redis_client.xpending(stream, "r"))["pending"] == 0


async def _none_pending(redis_client, stream: str) -> bool:
    return (await redis_client.xpending(stream, "r"))["pending"] == 0


async def test_the_sink_retries_through_the_outage_and_delivers_every_message(
    run_route, redis_client, redis_proxy, key
):
    stream = key()
    async with redis_proxy() as proxy:
        sink = f"""
            type = "redis_stream"
            url = "redis://{proxy.host_port}/0"
            stream = "{stream}"
            timeout = "1s"
        """
        await sink_survives_an_outage(run_route, proxy, sink, integrator_redis)

    ids = {fields[b"message_id"] for _id, fields in await redis_client.xrange(stream)}
    assert len(ids) == 30  # every message arrived (a lost reply may add a duplicate entry)
