"""``postgres_listen`` source: LISTEN on channels, one message per NOTIFY.

NOTIFY is not durable: a notification sent while the daemon is not listening (down,
restarting, reconnecting) is gone, and a notification has no id of its own. So this
source is at-most-once for whatever happens while it is not connected; use
``postgres_poll`` when every row must arrive. Once a notification is submitted it
is as safe as any other message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream

from integrator import Duration, Intake, Message, Source
from integrator.payload import decode_body_with_json
from integrator_postgres.connection import (
    ConnectionOptions,
    PostgresConnectorError,
    close_connection,
    connect,
    describe,
    log,
)

if TYPE_CHECKING:
    import asyncpg


class ListenOptions(ConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The channels to LISTEN on.
    channels: list[str]
    #: "auto": a payload that parses as JSON becomes that data, anything else stays
    #: text; "text": always the payload text.
    decode: Literal["auto", "text"] = "auto"
    #: How often an idle connection is checked (a dead one is replaced).
    keepalive: Duration = Duration(10.0)
    #: Most notifications committed together.
    batch: int = 100

    def validate(self) -> None:
        super().validate()
        if not self.channels or not all(channel.strip() for channel in self.channels):
            raise ValueError("channels must name at least one channel")
        if self.keepalive <= 0:
            raise ValueError("keepalive must be greater than zero")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")


@dataclass(frozen=True)
class _Notification:
    channel: str
    payload: str
    pid: int


class PostgresListenSource(Source):
    Options = ListenOptions
    description = "LISTEN/NOTIFY (not durable: notifications sent while down are lost)"
    options: ListenOptions

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        options = self.options
        send, receive = anyio.create_memory_object_stream[_Notification | None](math.inf)

        def on_notify(_conn: Any, pid: int, channel: str, payload: str) -> None:
            send.send_nowait(_Notification(channel, payload, pid))

        def on_lost(_conn: Any) -> None:
            send.send_nowait(None)  # None in the stream: the connection is gone

        conn = await connect(options, f"integrator:{self.context.route}")
        try:
            conn.add_termination_listener(on_lost)
            for channel in options.channels:
                await conn.add_listener(channel, on_notify)
            task_status.started()
            log.info("postgres_listen %s: listening on %s", self.context.route, options.channels)
            async with send, receive:
                while True:
                    batch, lost = await self._next_batch(conn, receive)
                    if batch:
                        await intake.wait_accepting()
                        built = [self._message(item) for item in batch]
                        await intake.submit(
                            [m for m, _ in built], json_bodies=[text for _, text in built]
                        )
                    if lost:
                        raise PostgresConnectorError(
                            f"lost the LISTEN connection to {options.safe_url()}"
                        )
        finally:
            await close_connection(conn)

    async def _next_batch(
        self,
        conn: asyncpg.Connection,
        receive: MemoryObjectReceiveStream[_Notification | None],
    ) -> tuple[list[_Notification], bool]:
        """Wait for notifications, checking the connection whenever it has been idle.

        Returns what arrived and whether the connection was lost after it: what was
        received before the loss is still committed.
        """
        import asyncpg

        options = self.options
        while True:
            with anyio.move_on_after(float(options.keepalive)):
                item = await receive.receive()
                break
            try:
                await conn.execute("SELECT 1", timeout=float(options.keepalive))
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                raise PostgresConnectorError(
                    f"the LISTEN connection died: {describe(err)}"
                ) from err
        batch: list[_Notification] = []
        while item is not None:
            batch.append(item)
            if len(batch) >= options.batch:
                return batch, False
            try:
                item = receive.receive_nowait()
            except anyio.WouldBlock:
                return batch, False
        return batch, True

    def _message(self, item: _Notification) -> tuple[Message, bytes | None]:
        """The message, and the JSON text its body was decoded from (None if it was not)."""
        body, text = decode_body_with_json(item.payload.encode(), self.options.decode)
        attributes = {"channel": item.channel, "pid": item.pid}
        return Message(body=body, attributes=attributes), text
