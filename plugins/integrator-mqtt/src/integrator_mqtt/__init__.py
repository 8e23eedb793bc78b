"""integrator-mqtt: MQTT 5 and 3.1.1 for integrator.

Provides the ``mqtt`` source (a subscription with a persistent session; QoS 1
acknowledged after the engine commits) and the ``mqtt`` sink (QoS 1/2 publish that
waits for the broker's acknowledgement). Installed, it is found through the
``integrator`` entry point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from integrator import hookimpl, lazy_exports

if TYPE_CHECKING:
    from integrator_mqtt.connection import MqttUnavailable
    from integrator_mqtt.sink import MqttSink
    from integrator_mqtt.source import MqttSource

__all__ = ["MqttSink", "MqttSource", "MqttUnavailable"]

#: Where each public name lives. Imported on first use, so that loading the plugin
#: (every ``integrator`` command does) imports none of its components.
_EXPORTS = {
    "MqttSink": "integrator_mqtt.sink",
    "MqttSource": "integrator_mqtt.source",
    "MqttUnavailable": "integrator_mqtt.connection",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def integrator_sources(register: Any) -> None:
    register("mqtt", "integrator_mqtt.source:MqttSource")


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("mqtt", "integrator_mqtt.sink:MqttSink")
