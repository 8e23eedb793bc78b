"""``amqp`` source: consume a queue, acknowledging each message after the engine commits it.

The broker sends at most ``prefetch`` unacknowledged messages; while the engine's
store is above its high-water mark the source stops acknowledging (it does not
submit), so the broker stops sending: backpressure reaches the producers through
the queue. A message received but not yet committed when the daemon dies is
requeued by the broker (``redelivered`` is then set) and delivered again after the
restart. The message id is the AMQP ``message_id`` property when the publisher set
one (our ``amqp`` sink always does), so ``dedupe_window`` can drop redeliveries.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream

from integrator import Intake, Message, Source, redact_url
from integrator.payload import Decode, PayloadError, decode_body_with_json, header_text
from integrator_amqp.connection import AmqpConnectionOptions, AmqpUnavailable, connect

if TYPE_CHECKING:
    import aio_pika.abc
    from aio_pika.abc import AbstractIncomingMessage

#: AMQP basic properties copied into the message headers when present.
PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "type",
    "app_id",
    "user_id",
)


class Binding(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    exchange: str
    routing_key: str = ""


class AmqpSourceOptions(AmqpConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The queue to consume.
    queue: str
    #: Declare the queue (durable) if it does not exist; with false it must exist.
    declare: bool = True
    #: Extra queue arguments for the declaration, e.g. { "x-queue-type" = "quorum" }.
    queue_arguments: dict[str, Any] = {}
    #: Bind the declared queue to these exchanges (which must exist).
    bindings: list[Binding] = []
    #: Unacknowledged messages the broker may send ahead (also the largest batch committed).
    prefetch: int = 100
    #: How to read the body: "auto" (the content type, else JSON, else text, else bytes).
    decode: Decode = "auto"

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.prefetch <= 65535:
            raise ValueError("prefetch must be between 1 and 65535")


class _Lost:
    """Put in the delivery stream when the connection or channel closes."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class AmqpSource(Source):
    Options = AmqpSourceOptions
    description = "consume an AMQP 0-9-1 queue (RabbitMQ), acknowledging after commit"
    options: AmqpSourceOptions

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        import aiormq.exceptions
        from aio_pika.abc import AbstractIncomingMessage

        options = self.options
        connection = await connect(options)
        send, receive = anyio.create_memory_object_stream[AbstractIncomingMessage | _Lost](math.inf)

        def lost(_sender: Any, error: BaseException | None = None) -> None:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.send_nowait(_Lost(error))  # after our own close nobody listens

        try:
            connection.close_callbacks.add(lost)
            channel = await connection.channel(publisher_confirms=False)
            channel.close_callbacks.add(lost)
            await channel.set_qos(prefetch_count=options.prefetch)
            queue = await self._queue(channel)
            await queue.consume(send.send, no_ack=False)
            task_status.started()
            self.context.logger.info(
                "amqp: consuming %s from %s (prefetch %d)",
                options.queue,
                redact_url(options.url),
                options.prefetch,
            )
            await self._consume(receive, intake)
        except (
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            TimeoutError,
        ) as err:
            raise AmqpUnavailable(f"amqp: {type(err).__name__}: {err}") from err
        finally:
            with anyio.CancelScope(shield=True):
                await connection.close()
            send.close()
            receive.close()

    async def _queue(self, channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
        options = self.options
        queue = await channel.declare_queue(
            options.queue,
            durable=True,
            passive=not options.declare,
            arguments=options.queue_arguments or None,
        )
        for binding in options.bindings:
            await queue.bind(binding.exchange, routing_key=binding.routing_key)
        return queue

    async def _consume(
        self,
        receive: MemoryObjectReceiveStream[AbstractIncomingMessage | _Lost],
        intake: Intake,
    ) -> None:
        while True:
            await intake.wait_accepting()
            batch = [await receive.receive()]
            while len(batch) < self.options.prefetch:  # whatever else has already arrived
                try:
                    batch.append(receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            deliveries = [d for d in batch if not isinstance(d, _Lost)]
            if deliveries:
                await self._commit(intake, deliveries)
            for item in batch:
                if isinstance(item, _Lost):
                    error = item.error
                    reason = f"{type(error).__name__}: {error}" if error else "closed"
                    raise AmqpUnavailable(f"amqp: connection to the broker lost ({reason})")

    async def _commit(self, intake: Intake, deliveries: list[AbstractIncomingMessage]) -> None:
        """Submit, then acknowledge: never the other way round.

        Shielded from cancellation, so that a stop does not leave committed messages
        unacknowledged (to be delivered twice); the store's busy timeout and the
        acknowledgements (which need no reply) bound it.
        """
        built = [self._message(d) for d in deliveries]
        messages = [message for message, _ in built]
        with anyio.CancelScope(shield=True):
            await intake.submit(messages, json_bodies=[text for _, text in built])
            for delivery in deliveries:
                await delivery.ack()

    def _message(self, delivery: AbstractIncomingMessage) -> tuple[Message, bytes | None]:
        """The message, and the JSON text its body was decoded from (None if it was not)."""
        headers = {name: header_text(value) for name, value in (delivery.headers or {}).items()}
        for prop in PROPERTIES:
            value = getattr(delivery, prop, None)
            if value is not None:
                headers[prop.replace("_", "-")] = header_text(value)
        if delivery.priority:  # 0, the default, says nothing
            headers["priority"] = str(delivery.priority)
        if delivery.timestamp is not None:
            headers["timestamp"] = delivery.timestamp.isoformat()
        attributes: dict[str, Any] = {
            "queue": self.options.queue,
            "exchange": delivery.exchange or "",
            "routing_key": delivery.routing_key or "",
            "redelivered": bool(delivery.redelivered),
        }
        try:
            body, text = decode_body_with_json(
                delivery.body, self.options.decode, delivery.content_type
            )
        except PayloadError as err:
            body, text, attributes["decode_error"] = delivery.body, None, str(err)
        fields: dict[str, Any] = {"body": body, "headers": headers, "attributes": attributes}
        if delivery.message_id:
            fields["id"] = delivery.message_id
        if delivery.timestamp is not None:
            fields["created_at"] = delivery.timestamp.timestamp()
        return Message(**fields), text
