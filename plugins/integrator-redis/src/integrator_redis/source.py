"""``redis_stream`` source: a consumer in a Redis Streams consumer group.

Entries are acknowledged (XACK) only after the engine has committed them, so an
entry read by a daemon that dies before the commit stays in the group's pending
list. It comes back in one of two ways: the same consumer (same host) reads its own
pending entries first when it starts, and any consumer of the group claims entries
left idle longer than ``claim_idle`` (XAUTOCLAIM), e.g. those of a host that is
gone for good. Delivery is therefore at least once; the message id is
``<stream>:<entry id>``, stable across redeliveries, so ``dedupe_window`` on the
route or an idempotent sink removes the rare duplicate.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from integrator import Duration, Intake, Message, Source, redact_url
from integrator.payload import Decode, PayloadError, decode_body_with_json, header_text
from integrator_redis.connection import (
    RedisConnectionOptions,
    RedisUnavailable,
    connect,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

Entry = tuple[bytes, dict[bytes, bytes] | None]


class StreamSourceOptions(RedisConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The stream to read.
    stream: str
    #: Consumer group; defaults to the route's name (so two routes each see every entry,
    #: and daemons on several hosts running the same route share the work).
    group: str | None = None
    #: This daemon's name in the group; defaults to the host name.
    consumer: str | None = None
    #: Where a newly created group starts: "$" (new entries only) or "0" (the whole stream).
    start_id: str = "$"
    #: Entries read per XREADGROUP (and committed together).
    batch: int = 100
    #: How long one XREADGROUP waits for new entries.
    block: Duration = Duration(1)
    #: Claim entries another consumer has left unacknowledged for this long.
    claim_idle: Duration = Duration(60)
    #: The field holding the body; the other fields become headers. Entries without
    #: it get all their fields as the body (a JSON object of strings).
    body_field: str = "body"
    #: How to read the body: "auto" (JSON, else text, else bytes), "json", "text", "bytes".
    decode: Decode = "auto"

    def validate(self) -> None:
        super().validate()
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.claim_idle <= 0:
            raise ValueError("claim_idle must be greater than zero")


class RedisStreamSource(Source):
    Options = StreamSourceOptions
    description = "consume a Redis stream as a consumer group (XREADGROUP, XACK after commit)"
    options: StreamSourceOptions

    @property
    def group(self) -> str:
        return self.options.group or self.context.route

    @property
    def consumer(self) -> str:
        return self.options.consumer or socket.gethostname()

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        import redis.exceptions as rex

        options = self.options
        client = connect(options, read_wait=float(options.block))
        try:
            await self._create_group(client)
            task_status.started()
            self.context.logger.info(
                "redis_stream: reading %s as %s/%s from %s",
                options.stream,
                self.group,
                self.consumer,
                redact_url(options.url),
            )
            await self._consume(client, intake)
        except (rex.ConnectionError, rex.TimeoutError, OSError) as err:
            raise RedisUnavailable(
                f"redis at {redact_url(options.url)}: {type(err).__name__}: {err}"
            ) from err
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def _create_group(self, client: aioredis.Redis) -> None:
        import redis.exceptions as rex

        try:
            await client.xgroup_create(
                self.options.stream, self.group, id=self.options.start_id, mkstream=True
            )
        except rex.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def _consume(self, client: aioredis.Redis, intake: Intake) -> None:
        options = self.options
        # Our own entries that a previous run read but did not acknowledge come first.
        await self._drain_own_pending(client, intake)
        next_claim = time.monotonic()
        while True:
            await intake.wait_accepting()
            if time.monotonic() >= next_claim:
                await self._claim_stale(client, intake)
                next_claim = time.monotonic() + min(float(options.claim_idle), 30.0)
            reply: Any = await client.xreadgroup(
                self.group,
                self.consumer,
                {options.stream: ">"},
                count=options.batch,
                block=max(1, int(options.block * 1000)),
            )
            for _stream, entries in reply or ():
                await self._commit(client, intake, entries, "new")

    async def _drain_own_pending(self, client: aioredis.Redis, intake: Intake) -> None:
        after = "0"
        while True:
            await intake.wait_accepting()
            reply: Any = await client.xreadgroup(
                self.group, self.consumer, {self.options.stream: after}, count=self.options.batch
            )
            entries: list[Entry] = reply[0][1] if reply else []
            if not entries:
                return
            await self._commit(client, intake, entries, "pending")
            after = entries[-1][0].decode()

    async def _claim_stale(self, client: aioredis.Redis, intake: Intake) -> None:
        """Take over entries other consumers read long ago and never acknowledged."""
        cursor = "0-0"
        idle_ms = int(self.options.claim_idle * 1000)
        while True:
            claimed: Any = await client.xautoclaim(
                self.options.stream,
                self.group,
                self.consumer,
                idle_ms,
                start_id=cursor,
                count=self.options.batch,
            )
            cursor_raw, entries = claimed[0], claimed[1]  # (next cursor, entries, deleted ids)
            if entries:
                self.context.logger.warning(
                    "redis_stream %s: claimed %d entries left pending for over %.0fs",
                    self.options.stream,
                    len(entries),
                    self.options.claim_idle,
                )
                await self._commit(client, intake, entries, "claimed")
            cursor = cursor_raw.decode() if isinstance(cursor_raw, bytes) else str(cursor_raw)
            if cursor == "0-0":
                return
            await intake.wait_accepting()

    async def _commit(
        self, client: aioredis.Redis, intake: Intake, entries: Sequence[Entry], how: str
    ) -> None:
        """Submit the entries, then acknowledge them: never the other way round.

        The pair is shielded from cancellation, so that a stop does not leave
        committed but unacknowledged entries to be delivered twice; both steps are
        bounded by their own timeouts (the store's busy timeout, the socket timeout).
        """
        ids = [entry_id for entry_id, _fields in entries]
        built = [
            self._message(entry_id, fields, how)
            for entry_id, fields in entries
            if fields is not None  # trimmed from the stream while pending: nothing to deliver
        ]
        messages = [message for message, _ in built]
        with anyio.CancelScope(shield=True):
            await intake.submit(messages, json_bodies=[text for _, text in built])
            await client.xack(self.options.stream, self.group, *ids)

    def _message(
        self, entry_id: bytes, fields: dict[bytes, bytes], how: str
    ) -> tuple[Message, bytes | None]:
        """The message, and the JSON text its body was decoded from (None if it was not)."""
        options = self.options
        key = options.body_field.encode()
        entry = entry_id.decode()
        attributes: dict[str, Any] = {"stream": options.stream, "entry_id": entry}
        if how != "new":
            attributes["redelivered"] = True
        if key in fields:
            raw = fields[key]
            headers = {
                k.decode("utf-8", "replace"): header_text(v) for k, v in fields.items() if k != key
            }
            try:
                body, text = decode_body_with_json(raw, options.decode)
            except PayloadError as err:
                body, text, attributes["decode_error"] = raw, None, str(err)
        else:
            headers = {}
            body = {k.decode("utf-8", "replace"): header_text(v) for k, v in fields.items()}
            text = None
        message = Message(
            id=f"{options.stream}:{entry}", body=body, headers=headers, attributes=attributes
        )
        return message, text
