"""``nats`` source: a JetStream durable pull consumer that acks only after the store commits.

::

    fetch a batch ──> submit to the engine (durable commit) ──> ack each, flush
                                  └─ failed: NAK with delay, raise (supervisor restarts)

A message fetched but not acked (the daemon killed, the connection lost) is
redelivered by the server once ``ack_wait`` has passed, with the same stream
sequence, hence the same message id: the route's ``dedupe_window`` drops the
repeat when the first copy did reach the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import msgspec

from integrator import Duration, Intake, Message, Source
from integrator_nats.connection import ConnectionOptions, NatsError, connect, describe, log

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.api import DeliverPolicy

MSG_ID_HEADER = "Nats-Msg-Id"


def deliver_policy(name: str) -> DeliverPolicy:
    """nats-py's enum for a ``deliver_policy`` option (imported here, when first used)."""
    from nats.js.api import DeliverPolicy

    policies = {
        "all": DeliverPolicy.ALL,
        "new": DeliverPolicy.NEW,
        "last": DeliverPolicy.LAST,
        "last_per_subject": DeliverPolicy.LAST_PER_SUBJECT,
    }
    return policies[name]


class NatsSourceOptions(ConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The JetStream stream to consume (it must exist).
    stream: str
    #: Only messages on this subject (wildcards allowed); default: all of the stream's.
    subject: str | None = None
    #: Name of the durable consumer; default ``integrator-<route>``. Created, or
    #: updated to these options, at start.
    durable: str | None = None
    #: Where a new consumer starts: every stored message, only new ones, or the last.
    deliver_policy: Literal["all", "new", "last", "last_per_subject"] = "all"
    #: Messages fetched (and committed to the store) at a time.
    batch: int = 100
    #: How long one pull request waits for messages before asking again.
    fetch_wait: Duration = Duration(5.0)
    #: How long the server waits for an ack before delivering a message again.
    ack_wait: Duration = Duration(30.0)
    #: Give up on a message after this many deliveries (default: never).
    max_deliver: int | None = None
    #: Redelivery delay asked for when the store could not take a batch.
    nak_delay: Duration = Duration(5.0)
    #: "auto": JSON when the payload parses as JSON, else bytes; "bytes"; "text" (UTF-8).
    decode: Literal["auto", "bytes", "text"] = "auto"

    def validate(self) -> None:
        super().validate()
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.fetch_wait <= 0 or self.ack_wait <= 0:
            raise ValueError("fetch_wait and ack_wait must be greater than zero")
        if self.max_deliver is not None and self.max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")


def decode_payload(data: bytes, mode: str) -> tuple[Any, bytes | None]:
    """The message body for a payload: JSON if ``auto`` and it parses, else bytes or text;
    and the payload itself when the body was decoded from it as JSON (for the store)."""
    if mode == "text":
        return data.decode("utf-8", "replace"), None
    if mode == "auto" and data:
        try:
            return msgspec.json.decode(data), data
        except msgspec.DecodeError:
            pass
    return data, None


def to_message(msg: Msg, decode: str) -> tuple[Message, bytes | None]:
    """Build the envelope: id from ``Nats-Msg-Id`` if the publisher set one, else
    ``<stream>:<sequence>``, stable across redeliveries either way. Also the JSON text
    the body was decoded from, or None."""
    meta = msg.metadata
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    seq = meta.sequence.stream
    message_id = headers.get(MSG_ID_HEADER) or f"{meta.stream}:{seq}"
    attributes: dict[str, Any] = {
        "subject": msg.subject,
        "stream": meta.stream,
        "seq": seq,
        "consumer": meta.consumer,
        "delivered": meta.num_delivered,
    }
    if meta.timestamp is not None:
        attributes["published_at"] = meta.timestamp.timestamp()
    body, text = decode_payload(msg.data, decode)
    message = Message(id=message_id, body=body, headers=headers, attributes=attributes)
    return message, text


class NatsSource(Source):
    Options = NatsSourceOptions
    description = "JetStream durable pull consumer; acks after the store commits"
    options: NatsSourceOptions

    @property
    def durable(self) -> str:
        return self.options.durable or f"integrator-{self.context.route}"

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Consume until cancelled. A lost connection raises :class:`NatsError`: the
        engine's supervisor shows it on the route's health and restarts the source
        with capped exponential backoff."""
        import nats.errors

        options = self.options
        client = await connect(options, name=f"integrator:{self.context.route}")
        try:
            subscription = await self._subscribe(client)
            task_status.started()
            log.info(
                "nats source %s: consuming stream %s as %s",
                self.context.route,
                options.stream,
                self.durable,
            )
            while True:
                await intake.wait_accepting()
                try:
                    fetched = await subscription.fetch(
                        options.batch, timeout=float(options.fetch_wait)
                    )
                except TimeoutError:  # nothing to fetch (nats-py raises either kind)
                    continue
                except nats.errors.ConnectionClosedError as err:
                    raise NatsError(f"lost the connection to {options.safe_url()}") from err
                except nats.errors.Error as err:
                    raise NatsError(f"fetching from {options.stream}: {describe(err)}") from err
                if fetched:
                    await self._hand_over(client, intake, fetched)
        finally:
            with anyio.CancelScope(shield=True):
                await _close(client)

    async def _subscribe(self, client: Client) -> Any:
        import nats.errors
        import nats.js.errors
        from nats.js.api import AckPolicy, ConsumerConfig

        options = self.options
        js = client.jetstream(timeout=float(options.connect_timeout))
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=deliver_policy(options.deliver_policy),
            ack_wait=float(options.ack_wait),
            max_deliver=options.max_deliver or -1,
            filter_subject=options.subject,
            max_ack_pending=max(1000, options.batch * 2),
        )
        try:
            # Create or update: the consumer follows the options on every start.
            await js.add_consumer(options.stream, config=config)
            return await js.pull_subscribe_bind(durable=self.durable, stream=options.stream)
        except nats.js.errors.NotFoundError as err:
            raise NatsError(f"JetStream stream {options.stream!r} does not exist") from err
        except nats.errors.Error as err:
            raise NatsError(
                f"cannot set up consumer {self.durable!r} on stream {options.stream!r}: "
                f"{describe(err)}"
            ) from err

    async def _hand_over(self, client: Client, intake: Intake, fetched: list[Msg]) -> None:
        """Commit a batch, then ack it; NAK it with a delay when the commit failed."""
        import nats.errors

        try:
            built = [to_message(msg, self.options.decode) for msg in fetched]
            await intake.submit([m for m, _ in built], json_bodies=[text for _, text in built])
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._nak(client, fetched)
            raise
        # Committed: let no cancellation leave the batch unacked (it would come back
        # as duplicates after ack_wait).
        with anyio.CancelScope(shield=True):
            try:
                for msg in fetched:
                    await msg.ack()
                await client.flush(timeout=int(max(1, self.options.connect_timeout)))
            except (nats.errors.Error, TimeoutError) as err:
                # The messages are safe in the store; the server will redeliver them
                # after ack_wait and the dedupe window drops the repeats.
                raise NatsError(f"acking {len(fetched)} message(s): {describe(err)}") from err

    async def _nak(self, client: Client, fetched: list[Msg]) -> None:
        import nats.errors

        delay = float(self.options.nak_delay)
        try:
            for msg in fetched:
                await msg.nak(delay=delay)
            await client.flush(timeout=int(max(1, self.options.connect_timeout)))
        except (nats.errors.Error, TimeoutError) as err:
            log.warning(
                "nats source %s: could not NAK %d message(s) (%s); they come back after ack_wait",
                self.context.route,
                len(fetched),
                describe(err),
            )


async def _close(client: Client) -> None:
    import nats.errors

    try:
        with anyio.move_on_after(2):
            await client.close()
    except (nats.errors.Error, OSError) as err:
        log.debug("closing nats client: %s", describe(err))
