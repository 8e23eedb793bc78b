"""integrator-nats: NATS JetStream for integrator.

Registers the ``nats`` source (a durable pull consumer that acks after the store
commits) and the ``nats`` sink (publish confirmed by PubAck, deduplicated by the
server through ``Nats-Msg-Id``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from integrator import hookimpl, lazy_exports

if TYPE_CHECKING:
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

#: Where each public name lives. Imported on first use, so that loading the plugin
#: (every ``integrator`` command does) imports none of its components.
_EXPORTS = {
    "ConnectionOptions": "integrator_nats.connection",
    "NatsError": "integrator_nats.connection",
    "NatsSink": "integrator_nats.sink",
    "NatsSinkOptions": "integrator_nats.sink",
    "NatsSource": "integrator_nats.source",
    "NatsSourceOptions": "integrator_nats.source",
    "TLSOptions": "integrator_nats.connection",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def integrator_sources(register: Any) -> None:
    register("nats", "integrator_nats.source:NatsSource")


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("nats", "integrator_nats.sink:NatsSink")
