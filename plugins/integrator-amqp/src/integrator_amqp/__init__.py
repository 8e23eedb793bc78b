"""integrator-amqp: RabbitMQ (AMQP 0-9-1) for integrator.

Provides the ``amqp`` source (a queue consumer that acknowledges after the engine
commits) and the ``amqp`` sink (publisher confirms, persistent messages). Installed,
it is found through the ``integrator`` entry point.
"""

from __future__ import annotations

from typing import Any

from integrator import hookimpl
from integrator_amqp.connection import AmqpUnavailable
from integrator_amqp.sink import AmqpSink
from integrator_amqp.source import AmqpSource

__all__ = ["AmqpSink", "AmqpSource", "AmqpUnavailable"]


@hookimpl
def integrator_sources(register: Any) -> None:
    register("amqp", AmqpSource)


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("amqp", AmqpSink)
