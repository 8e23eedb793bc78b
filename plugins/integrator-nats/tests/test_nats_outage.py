"""A NATS outage while the daemon runs: both ends reconnect and nothing is lost.

The outage is made by a TCP proxy between the daemon and the shared server, never
by stopping the server other tests use.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from integrator.engine.health import State
from integrator.testing import TcpProxy

pytestmark = pytest.mark.service("nats")


async def test_an_outage_loses_nothing_and_the_route_recovers(
    streams: Any, run_route: Any, nats_url: Any
) -> None:
    inbound = await streams.create("in")
    outbound = await streams.create("out")
    async with TcpProxy("127.0.0.1", 4222) as proxy:
        url = nats_url(proxy.port)
        config = f"""
            [routes.relay]
            retry = {{ max_attempts = 100, initial = "100ms", max = "500ms" }}
            sinks = [{{ type = "nats", url = "{url}", subject = "{outbound}.copy", timeout = "500ms" }}]

            [routes.relay.source]
            type = "nats"
            url = "{url}"
            stream = "{inbound}"
            fetch_wait = "200ms"
            ack_wait = "1s"      # a message the server handed to the dead connection comes back
            ping_interval = "1s"
        """
        async with run_route(config, entrypoints=True) as daemon:
            health = daemon.services.health.component("relay/source")
            for n in range(10):
                await streams.publish(f"{inbound}.x", b"%d" % n)
            await daemon.wait_delivered("relay", 10)

            proxy.cut()
            await daemon.wait_for(lambda: health.state is State.FAILING, 5, "the source to fail")
            assert "lost the connection" in health.last_error
            for n in range(10, 20):  # published while the daemon cannot reach the server
                await streams.publish(f"{inbound}.x", b"%d" % n)
            await anyio.sleep(0.5)
            proxy.restore()

            for n in range(20, 30):
                await streams.publish(f"{inbound}.x", b"%d" % n)
            await daemon.wait_delivered("relay", 30, timeout=20)
            assert health.state is State.RUNNING

    copied = await streams.read_all(outbound)
    assert sorted(int(m.data) for m in copied) == list(range(30))
    assert len({m.headers["Nats-Msg-Id"] for m in copied}) == 30
