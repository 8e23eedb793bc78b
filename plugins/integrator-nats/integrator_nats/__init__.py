"""integrator-nats: NATS JetStream for integrator.

Registers the ``nats`` source (a durable pull consumer that acks after the store
commits) and the ``nats`` sink (publish confirmed by PubAck, deduplicated by the
server through ``Nats-Msg-Id``).
"""

from __future__ import annotations

from typing import Any

from integrator import hookimpl
from integrator_nats.connection import ConnectionOptions, NatsError, TLSOptions
from integrator_nats.sink import NatsSink, NatsSinkOptions
from integrator_nats.source import NatsSource, NatsSourceOptions

__all__ = [
    "ConnectionOptions",
    "NatsError",
    "NatsSink",
    "NatsSinkOptions",
    "NatsSource",
    "NatsSourceOptions",
    "TLSOptions",
]


@hookimpl
def integrator_sources(register: Any) -> None:
    register("nats", NatsSource)


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("nats", NatsSink)
