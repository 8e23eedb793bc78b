"""Ready-made checks of the guarantees every sink owes, for plugin authors' tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from integrator.testing.proxy import TcpProxy

SINK_OUTAGE_ROUTE = """
[routes.r]
source = {{ type = "timer", interval = "20ms", count = {count} }}
retry = {{ max_attempts = 1000, initial = "50ms", max = "200ms" }}

[[routes.r.sinks]]
{sink}
"""


async def sink_survives_an_outage(
    run_route: Callable[..., Any],
    proxy: TcpProxy,
    sink: str,
    *plugins: Any,
    count: int = 30,
) -> None:
    """Deliver ``count`` messages through a sink while its connection is cut and restored.

    ``sink`` is the body of the sink's TOML table, its ``url`` pointing through
    ``proxy`` (an entered :class:`TcpProxy`). Returns once the engine counted every
    delivery; the caller then reads the messages back from its service, where each
    ``message.id`` must appear (a lost acknowledgement may add a duplicate).
    """
    toml = SINK_OUTAGE_ROUTE.format(count=count, sink=textwrap.dedent(sink).strip())
    async with run_route(toml, *plugins) as daemon:
        stats = daemon.services.route_stats("r")
        await daemon.wait_delivered("r", 5)
        proxy.cut()
        await daemon.wait_for(
            lambda: any(s.failed for s in stats.sinks.values()), 10, "a failed delivery"
        )
        proxy.restore()
        await daemon.wait_delivered("r", count, timeout=20)
