"""``redis_stream`` sink (XADD) and ``redis_publish`` sink (PUBLISH).

``deliver`` returns once Redis has answered the command, so a delivery counts only
when the entry is in the stream (or the message was handed to the subscribers).
XADD has no idempotency key before Redis 8.2, so a reply lost to a dropped
connection means the retry adds the entry again: every entry carries the message id
in ``id_field`` for consumers that must dedupe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from integrator import DeliveryError, Message, Sink, Size, redact_url
from integrator.payload import encode_body, header_text
from integrator_redis.connection import (
    RedisConnectionOptions,
    RedisUnavailable,
    connect,
    delivery_error,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class _RedisSink(Sink):
    """Holds the client: opened (and proved reachable) in ``open``, closed in ``close``.

    The client's pool replaces a broken connection at the next command, so after an
    outage the first retried delivery reconnects by itself.
    """

    options: Any
    _client: aioredis.Redis | None = None

    async def open(self) -> None:
        import redis.exceptions as rex

        self._client = connect(self.options)
        try:
            await self._client.ping()
        except (rex.RedisError, OSError) as err:
            await self.close()
            raise RedisUnavailable(
                f"redis at {redact_url(self.options.url)}: {type(err).__name__}: {err}"
            ) from err

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise DeliveryError("the redis sink is not open", retriable=True)
        return self._client

    def _payload(self, message: Message) -> bytes:
        data = encode_body(message.body)
        limit = self.options.max_size
        if limit is not None and len(data) > limit:
            raise DeliveryError(
                f"message {message.id} is {len(data)} bytes, over max_size {int(limit)}",
                retriable=False,
            )
        return data

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class StreamSinkOptions(RedisConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The stream to append to (created by the first XADD).
    stream: str
    #: Trim the stream to about this many entries (XADD MAXLEN ~), or keep everything.
    maxlen: int | None = None
    #: The field that holds the body (what the ``redis_stream`` source reads back).
    body_field: str = "body"
    #: The field that holds the message id, for consumers that dedupe; "" to leave it out.
    id_field: str = "message_id"
    #: Also write each message header as a field of the entry.
    headers: bool = True
    #: Refuse (without retrying) bodies larger than this.
    max_size: Size | None = None

    def validate(self) -> None:
        super().validate()
        if self.maxlen is not None and self.maxlen < 1:
            raise ValueError("maxlen must be at least 1")


class RedisStreamSink(_RedisSink):
    Options = StreamSinkOptions
    description = "append each message to a Redis stream (XADD, optional MAXLEN ~)"
    options: StreamSinkOptions

    async def deliver(self, message: Message) -> None:
        import redis.exceptions as rex

        options = self.options
        fields: dict[str, bytes | str] = {}
        if options.headers:
            fields.update({name: header_text(value) for name, value in message.headers.items()})
        if options.id_field:
            fields[options.id_field] = message.id
        fields[options.body_field] = self._payload(message)
        try:
            await self.client.xadd(
                options.stream,
                fields,  # type: ignore[arg-type]
                maxlen=options.maxlen,
                approximate=True,
            )
        except (rex.RedisError, OSError) as err:
            raise delivery_error(err, f"XADD {options.stream}") from err


class PublishSinkOptions(RedisConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The pub/sub channel to publish to.
    channel: str
    #: Treat "nobody was subscribed" as a failure to retry; pub/sub keeps nothing, so
    #: without a subscriber the message is gone.
    require_subscribers: bool = False
    #: Refuse (without retrying) bodies larger than this.
    max_size: Size | None = None


class RedisPublishSink(_RedisSink):
    Options = PublishSinkOptions
    description = "publish each message body on a Redis pub/sub channel (PUBLISH)"
    options: PublishSinkOptions

    async def deliver(self, message: Message) -> None:
        import redis.exceptions as rex

        options = self.options
        try:
            receivers = await self.client.publish(options.channel, self._payload(message))
        except (rex.RedisError, OSError) as err:
            raise delivery_error(err, f"PUBLISH {options.channel}") from err
        if receivers == 0 and options.require_subscribers:
            raise DeliveryError(f"no subscriber on channel {options.channel}", retriable=True)
