"""``mqtt`` sink: publish at QoS 1 or 2 and return once the broker acknowledged.

``deliver`` waits for PUBACK (QoS 1) or PUBCOMP (QoS 2). A connection lost before
the acknowledgement makes the delivery fail and be retried on a new connection, so
at QoS 1 a subscriber may see the message twice: with MQTT 5 every publication
carries the message id in a user property (``id_property``), which the ``mqtt``
source uses as the message id.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Literal

import anyio

from integrator import DeliveryError, Message, Sink, Size
from integrator.components import Context
from integrator.payload import content_type_of, encode_body, header_text
from integrator_mqtt.connection import (
    MqttConnectionOptions,
    MqttUnavailable,
    disconnect,
    make_client,
)

if TYPE_CHECKING:
    import aiomqtt
    from paho.mqtt.properties import Properties

#: The largest payload MQTT can carry (the remaining-length field's limit, minus headers).
MQTT_MAX_PAYLOAD = 268_435_455 - 65_535


class MqttSinkOptions(MqttConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The topic to publish to (no wildcards).
    topic: str
    qos: Literal[1, 2] = 1
    #: Ask the broker to keep the last message for new subscribers.
    retain: bool = False
    #: The client id; by default a random one (the sink keeps no session).
    client_id: str | None = None
    #: Refuse (without retrying) payloads larger than this.
    max_size: Size | None = None

    def validate(self) -> None:
        super().validate()
        if not self.topic or "+" in self.topic or "#" in self.topic:
            raise ValueError(f"topic must be a topic name without wildcards, found {self.topic!r}")


class MqttSink(Sink):
    Options = MqttSinkOptions
    description = "publish each message to an MQTT topic (QoS 1/2, waits for the broker's ack)"
    options: MqttSinkOptions

    def __init__(self, options: MqttSinkOptions, context: Context) -> None:
        super().__init__(options, context)
        self._lock = anyio.Lock()  # one reconnect at a time for concurrent deliveries
        self._client: aiomqtt.Client | None = None

    async def open(self) -> None:
        await self._ensure_client()

    async def _ensure_client(self) -> aiomqtt.Client:
        import aiomqtt

        async with self._lock:
            if self._client is None:
                client_id = self.options.client_id or f"integrator-{uuid.uuid4().hex[:12]}"
                client = make_client(self.options, client_id)
                try:
                    await client.__aenter__()
                except aiomqtt.MqttError as err:
                    raise MqttUnavailable(f"mqtt broker at {self.options.endpoint}: {err}") from err
                self._client = client
            return self._client

    async def deliver(self, message: Message) -> None:
        import aiomqtt

        options = self.options
        payload = encode_body(message.body)
        limit = min(options.max_size or MQTT_MAX_PAYLOAD, MQTT_MAX_PAYLOAD)
        if len(payload) > limit:
            raise DeliveryError(
                f"message {message.id} is {len(payload)} bytes, over the limit of {limit}",
                retriable=False,
            )
        client = None
        try:
            client = await self._ensure_client()
            await client.publish(
                options.topic,
                payload,
                qos=options.qos,
                retain=options.retain,
                properties=self._properties(message) if options.protocol == "5" else None,
            )
        except MqttUnavailable as err:
            raise DeliveryError(str(err), retriable=True) from err
        except aiomqtt.MqttError as err:
            await self._drop_client(client)  # reconnect at the next delivery
            raise DeliveryError(
                f"publish to {options.topic} at {options.endpoint}: {err}", retriable=True
            ) from err

    def _properties(self, message: Message) -> Properties:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = content_type_of(message.body)
        properties.UserProperty = [
            *((name, header_text(value)) for name, value in message.headers.items()),
            (self.options.id_property, message.id),
        ]
        return properties

    async def _drop_client(self, broken: aiomqtt.Client | None = None) -> None:
        """Forget the client, unless another delivery has already replaced ``broken``."""
        async with self._lock:
            if broken is not None and broken is not self._client:
                return
            client, self._client = self._client, None
        if client is not None:
            await disconnect(client)

    async def close(self) -> None:
        await self._drop_client()
