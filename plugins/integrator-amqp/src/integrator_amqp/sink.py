"""``amqp`` sink: publish with publisher confirms, persistent, ``message_id`` = the message id.

``deliver`` returns only when the broker has confirmed the message (for a durable
queue: written to disk), and raises when it refused it or the connection broke
before the confirm came. A confirm lost with the connection means the retry may
publish the message twice; consumers can dedupe on ``message_id``, which the
``amqp`` source uses as the message id.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from integrator import DeliveryError, Message, Sink, Size
from integrator.components import Context
from integrator.payload import content_type_of, encode_body, header_text
from integrator_amqp.connection import AmqpConnectionOptions, AmqpUnavailable, connect

if TYPE_CHECKING:
    import aio_pika.abc


class AmqpSinkOptions(AmqpConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The exchange to publish to; "" is the default exchange (routing key = queue name).
    exchange: str = ""
    #: The routing key (for the default exchange: the queue's name).
    routing_key: str = ""
    #: Refuse unroutable messages (no queue bound): the broker returns them and the
    #: delivery is retried, instead of being dropped silently.
    mandatory: bool = True
    #: Persistent delivery mode (survives a broker restart in a durable queue).
    persistent: bool = True
    #: Refuse (without retrying) bodies larger than this.
    max_size: Size | None = None


def delivery_error(err: BaseException, what: str) -> DeliveryError:
    """Classify a publish failure for the retry policy.

    A refused permission or a failed precondition (message over the broker's size
    limit, mismatched exchange) would fail again: not retriable. Everything else
    (connection lost, nack, unroutable, exchange not found yet) may succeed later.
    """
    import aiormq.exceptions as amqp_errors

    reason = f"{what}: {type(err).__name__}: {err}"
    permanent = (amqp_errors.ChannelAccessRefused, amqp_errors.ChannelPreconditionFailed)
    return DeliveryError(reason, retriable=not isinstance(err, permanent))


class AmqpSink(Sink):
    Options = AmqpSinkOptions
    description = "publish each message to an AMQP exchange (publisher confirms, persistent)"
    options: AmqpSinkOptions

    def __init__(self, options: AmqpSinkOptions, context: Context) -> None:
        super().__init__(options, context)
        self._lock = anyio.Lock()  # one reconnect at a time for concurrent deliveries
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def open(self) -> None:
        await self._ensure_channel()

    async def _ensure_channel(self) -> aio_pika.abc.AbstractChannel:
        """The open channel, reconnecting first if the connection or channel broke."""
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            if self._connection is None or self._connection.is_closed:
                self._connection = await connect(self.options)
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            return self._channel

    async def deliver(self, message: Message) -> None:
        import aio_pika
        import aiormq.exceptions as amqp_errors
        from aio_pika.exceptions import CONNECTION_EXCEPTIONS

        options = self.options
        body = encode_body(message.body)
        if options.max_size is not None and len(body) > options.max_size:
            raise DeliveryError(
                f"message {message.id} is {len(body)} bytes, over max_size {int(options.max_size)}",
                retriable=False,
            )
        outgoing = aio_pika.Message(
            body,
            message_id=message.id,
            headers={name: header_text(value) for name, value in message.headers.items()},
            content_type=content_type_of(message.body),
            timestamp=datetime.fromtimestamp(message.created_at, UTC),
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if options.persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )
        what = f"publish to exchange {options.exchange!r} key {options.routing_key!r}"
        channel = None
        try:
            channel = await self._ensure_channel()
            exchange = (
                channel.default_exchange
                if not options.exchange
                else await channel.get_exchange(options.exchange, ensure=False)
            )
            await exchange.publish(
                outgoing,
                routing_key=options.routing_key,
                mandatory=options.mandatory,
                timeout=float(options.timeout),
            )
        except AmqpUnavailable as err:
            raise DeliveryError(str(err), retriable=True) from err
        except amqp_errors.DeliveryError as err:  # nacked or returned: the channel is fine
            raise delivery_error(err, what) from err
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as err:
            await self._drop_connection(channel)  # reconnect at the next delivery
            raise delivery_error(err, what) from err

    async def _drop_connection(self, broken: aio_pika.abc.AbstractChannel | None = None) -> None:
        """Forget the connection, unless another delivery has already replaced ``broken``."""
        from aio_pika.exceptions import CONNECTION_EXCEPTIONS

        async with self._lock:
            if broken is not None and broken is not self._channel:
                return
            connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await connection.close()

    async def close(self) -> None:
        await self._drop_connection()
