"""``mqtt`` source: subscribe with a persistent session, acknowledge QoS 1 after the commit.

The session outlives the connection (fixed ``client_id``, clean start off, a
session expiry), so QoS 1/2 messages published while the daemon is down or
reconnecting wait at the broker and arrive when it is back.

What is guaranteed, precisely:

* ``qos = 1`` (the default): at least once. PUBACK is sent only after the engine
  has committed the message (paho-mqtt's manual acknowledgements), so a message
  received but not committed when the daemon dies is sent again by the broker
  after the restart. The broker may also resend a message whose PUBACK was lost:
  a duplicate, which ``dedupe_window`` drops when the publisher set the message
  id property (our ``mqtt`` sink does).
* ``qos = 2``: exactly once between broker and daemon while the daemon runs, but
  the broker hands the message over (PUBREC) before the store has committed it,
  and the MQTT client keeps no state on disk: a ``kill -9`` in that window loses
  the message. Prefer ``qos = 1`` with ``dedupe_window`` where nothing may be lost.
* QoS 0 messages (published at QoS 0) are never stored by the broker for an
  offline session, and are lost while the daemon is down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc

from integrator import Duration, Intake, Message, Source
from integrator.payload import Decode, PayloadError, decode_body_with_json, header_text
from integrator_mqtt.connection import (
    MqttConnectionOptions,
    MqttUnavailable,
    connected,
    make_client,
    paho_client,
)

if TYPE_CHECKING:
    import aiomqtt


class MqttSourceOptions(MqttConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: Topic filters to subscribe to ("sensors/+/temperature", "orders/#").
    topics: list[str]
    #: The session's identity at the broker: must be unique per daemon, and stable so
    #: that the broker keeps the session (and the messages) while the daemon is away.
    client_id: str
    #: Subscription QoS (see the module documentation for what each guarantees).
    qos: Literal[1, 2] = 1
    #: How long the broker keeps the session after a disconnect (MQTT 5).
    session_expiry: Duration = Duration(7 * 86400)
    #: Unacknowledged messages the broker may send ahead (MQTT 5 receive maximum),
    #: also the largest batch committed at once.
    max_inflight: int = 100
    #: How to read the payload: "auto" (content type, else JSON, else text, else bytes).
    decode: Decode = "auto"

    def validate(self) -> None:
        super().validate()
        if not self.topics:
            raise ValueError("topics needs at least one topic filter")
        if not self.client_id:
            raise ValueError("client_id must not be empty (the session is kept under it)")
        if not 1 <= self.max_inflight <= 65535:
            raise ValueError("max_inflight must be between 1 and 65535")


class MqttSource(Source):
    Options = MqttSourceOptions
    description = "subscribe to MQTT topics (persistent session, QoS 1 acked after commit)"
    options: MqttSourceOptions

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        import aiomqtt

        options = self.options
        client = make_client(
            options,
            options.client_id,
            session_expiry=float(options.session_expiry),
            receive_maximum=options.max_inflight,
        )
        # QoS 2 completes its handshake on receipt (see above); QoS 1 waits for us.
        paho_client(client).manual_ack_set(options.qos == 1)
        where = f"mqtt broker at {options.endpoint}"
        try:
            async with connected(client, where):
                qos = int(options.qos)
                await client.subscribe([(topic, qos) for topic in options.topics])
                task_status.started()
                self.context.logger.info(
                    "mqtt: subscribed to %s at %s as %s (QoS %d)",
                    ", ".join(options.topics),
                    options.endpoint,
                    options.client_id,
                    options.qos,
                )
                await self._consume(client, intake)
        except aiomqtt.MqttError as err:
            raise MqttUnavailable(f"{where}: {err}") from err

    async def _consume(self, client: aiomqtt.Client, intake: Intake) -> None:
        messages = client.messages
        while True:
            # Under backpressure nothing is read and nothing acknowledged, so the broker
            # stops at max_inflight and keeps the rest in the session.
            await intake.wait_accepting()
            batch = [await anext(messages)]
            while len(messages) and len(batch) < self.options.max_inflight:
                batch.append(await anext(messages))  # already queued: does not wait
            await self._commit(client, intake, batch)

    async def _commit(
        self, client: aiomqtt.Client, intake: Intake, batch: Sequence[aiomqtt.Message]
    ) -> None:
        """Submit, then acknowledge in order: never the other way round.

        Shielded from cancellation, so that a stop does not leave committed messages
        unacknowledged (to be delivered twice); the store's busy timeout bounds it
        and acknowledging does not wait for the broker.
        """
        with anyio.CancelScope(shield=True):
            built = [self._message(m) for m in batch]
            await intake.submit([m for m, _ in built], json_bodies=[text for _, text in built])
            if self.options.qos == 1:
                paho = paho_client(client)
                for message in batch:
                    if message.qos == 1:
                        paho.ack(message.mid, message.qos)

    def _message(self, incoming: aiomqtt.Message) -> tuple[Message, bytes | None]:
        """The message, and the JSON text its body was decoded from (None if it was not)."""
        options = self.options
        headers: dict[str, str] = {}
        content_type: str | None = None
        properties = incoming.properties
        if properties is not None:
            for name, value in getattr(properties, "UserProperty", None) or ():
                headers[name] = value
            content_type = getattr(properties, "ContentType", None)
            for attr, header in (
                ("ContentType", "content-type"),
                ("ResponseTopic", "response-topic"),
                ("CorrelationData", "correlation-data"),
            ):
                value = getattr(properties, attr, None)
                if value is not None:
                    headers[header] = header_text(value)
        attributes: dict[str, Any] = {
            "topic": incoming.topic.value,
            "qos": incoming.qos,
            "retain": bool(incoming.retain),
        }
        payload = incoming.payload
        if isinstance(payload, bytes | bytearray):
            raw = bytes(payload)
        else:
            raw = b"" if payload is None else str(payload).encode()
        try:
            body, text = decode_body_with_json(raw, options.decode, content_type)
        except PayloadError as err:
            body, text, attributes["decode_error"] = raw, None, str(err)
        fields: dict[str, Any] = {"body": body, "headers": headers, "attributes": attributes}
        message_id = headers.pop(options.id_property, None)
        if message_id:
            fields["id"] = message_id
        return Message(**fields), text
