"""``nats`` sink: JetStream publish, confirmed by the server's PubAck.

Every publish carries ``Nats-Msg-Id: <message.id>``. The engine delivers at least
once (a retry after a lost PubAck publishes again); the stream's duplicate window
(two minutes by default) makes the server store such a repeat only once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from integrator import DeliveryError, Duration, Message, Sink
from integrator.payload import encode_body
from integrator_nats.connection import ConnectionOptions, NatsError, connect, describe, log
from integrator_nats.source import MSG_ID_HEADER

if TYPE_CHECKING:
    from nats.aio.client import Client


class NatsSinkOptions(ConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: Subject to publish to; a stream must capture it.
    subject: str
    #: When set, the server refuses the publish unless this stream stores it.
    stream: str | None = None
    #: How long to wait for the server's PubAck.
    timeout: Duration = Duration(5.0)
    #: Message headers to copy onto the NATS message; ``["*"]`` copies them all.
    forward_headers: list[str] = []

    def validate(self) -> None:
        super().validate()
        if not self.subject.strip():
            raise ValueError("subject cannot be empty")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than zero")


class NatsSink(Sink):
    Options = NatsSinkOptions
    description = "JetStream publish with Nats-Msg-Id for broker-side dedupe"
    options: NatsSinkOptions

    def __init__(self, options: NatsSinkOptions, context: Any) -> None:
        super().__init__(options, context)
        self._client: Client | None = None
        self._lock = anyio.Lock()
        forward = [name.lower() for name in options.forward_headers]
        self._forward_all = "*" in forward
        self._forward = set(forward)

    async def open(self) -> None:
        await self._connected()

    async def close(self) -> None:
        import nats.errors

        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            try:
                with anyio.move_on_after(5):
                    await client.drain()
            except (nats.errors.Error, OSError) as err:
                log.debug("closing nats sink %s: %s", self.context.route, describe(err))

    async def _connected(self) -> Client:
        """The client, reconnected if its connection was lost; a failure raises
        :class:`NatsError` and the engine retries the delivery with backoff."""
        async with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = await connect(
                    self.options, name=f"integrator:{self.context.route}:sink"
                )
            return self._client

    def _headers(self, message: Message) -> dict[str, str]:
        headers = {
            name: value
            for name, value in message.headers.items()
            if self._forward_all or name.lower() in self._forward
        }
        headers[MSG_ID_HEADER] = message.id
        return headers

    async def deliver(self, message: Message) -> None:
        import nats.errors
        import nats.js.errors

        options = self.options
        try:
            payload = encode_body(message.body)
        except (TypeError, msgspec.EncodeError) as err:
            raise DeliveryError(f"cannot encode the body: {err}", retriable=False) from err
        try:
            client = await self._connected()
        except NatsError as err:  # the server is away: retry later
            raise DeliveryError(str(err)) from err
        js = client.jetstream()
        try:
            ack = await js.publish(
                options.subject,
                payload,
                timeout=float(options.timeout),
                stream=options.stream,
                headers=self._headers(message),
            )
        except (nats.errors.MaxPayloadError, nats.js.errors.BadRequestError) as err:
            raise DeliveryError(
                f"NATS refused the message: {describe(err)}", retriable=False
            ) from err
        except nats.js.errors.NoStreamResponseError as err:
            # No stream captures the subject (or its leader is being elected): retry,
            # the retry policy dead-letters it if this lasts.
            raise DeliveryError(f"no JetStream stream answered for {options.subject!r}") from err
        except nats.js.errors.APIError as err:
            retriable = err.code is None or err.code >= 500 or err.code in (408, 429)
            raise DeliveryError(f"JetStream: {describe(err)}", retriable=retriable) from err
        except (nats.errors.Error, TimeoutError, OSError) as err:
            raise DeliveryError(f"publishing to {options.subject!r}: {describe(err)}") from err
        if ack.duplicate:
            log.debug("nats sink %s: %s was a duplicate", self.context.route, message.id)
