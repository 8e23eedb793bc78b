"""integrator-amqp: RabbitMQ (AMQP 0-9-1) for integrator.

Provides the ``amqp`` source (a queue consumer that acknowledges after the engine
commits) and the ``amqp`` sink (publisher confirms, persistent messages). Installed,
it is found through the ``integrator`` entry point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from integrator import hookimpl, lazy_exports

if TYPE_CHECKING:
    from integrator_amqp.connection import AmqpUnavailable
    from integrator_amqp.sink import AmqpSink
    from integrator_amqp.source import AmqpSource

__all__ = ["AmqpSink", "AmqpSource", "AmqpUnavailable"]

#: Where each public name lives. Imported on first use, so that loading the plugin
#: (every ``integrator`` command does) imports none of its components.
_EXPORTS = {
    "AmqpSink": "integrator_amqp.sink",
    "AmqpSource": "integrator_amqp.source",
    "AmqpUnavailable": "integrator_amqp.connection",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def integrator_sources(register: Any) -> None:
    register("amqp", "integrator_amqp.source:AmqpSource")


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("amqp", "integrator_amqp.sink:AmqpSink")
