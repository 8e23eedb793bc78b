"""``postgres_poll`` source: read new rows of a table by an increasing cursor column.

::

    SELECT … WHERE cursor > <checkpoint> ORDER BY cursor LIMIT batch
        ──> submit (durable commit) ──> save the checkpoint

The checkpoint moves only after the store has committed the rows it covers, so a
crash between the two reads those rows again (the same ids: the route's
``dedupe_window`` drops the repeats). Cursor values travel as text and are cast back
to the column's type in SQL, which keeps integers, numerics and timestamps exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec

from integrator import Duration, Intake, Message, Source
from integrator_postgres.codecs import install_json_codecs
from integrator_postgres.connection import (
    ConnectionOptions,
    PostgresConnectorError,
    close_connection,
    connect,
    describe,
    quote_ident,
    quote_table,
)

if TYPE_CHECKING:
    import asyncpg

CURSOR_ALIAS = "__integrator_cursor"
ID_ALIAS = "__integrator_id"
CHECKPOINT = "cursor"


class PollOptions(ConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The table (or view) to read, ``name`` or ``schema.name``.
    table: str
    #: A column whose value only grows: a serial id, or an insert/update timestamp.
    cursor: str
    #: A unique column that orders rows sharing a cursor value (needed when the
    #: cursor is a timestamp); it also goes into the message id.
    id_column: str | None = None
    #: Columns to read into the body; default every column.
    columns: list[str] = msgspec.field(default_factory=lambda: ["*"])
    #: An extra SQL condition (trusted text from the operator), e.g. ``status = 'paid'``.
    where: str | None = None
    #: Rows per query (and per commit).
    batch: int = 500
    #: Pause between queries once the table is drained.
    interval: Duration = Duration(1.0)
    #: Start after this cursor value on the first run, instead of at the beginning.
    start_after: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.interval <= 0:
            raise ValueError("interval must be greater than zero")
        if not self.columns:
            raise ValueError('columns cannot be empty (use ["*"] for every column)')


def to_body(row: asyncpg.Record) -> dict[str, Any]:
    """The row as plain JSON data: timestamps as ISO 8601 text, numerics as text,
    UUIDs as text, bytea as base64."""
    data = {key: value for key, value in row.items() if key not in (CURSOR_ALIAS, ID_ALIAS)}
    body: dict[str, Any] = msgspec.to_builtins(data)
    return body


class PostgresPollSource(Source):
    Options = PollOptions
    description = "read new rows by an increasing cursor column (checkpointed)"
    options: PollOptions

    def __init__(self, options: PollOptions, context: Any) -> None:
        super().__init__(options, context)
        id_column = options.id_column if options.id_column != options.cursor else None
        self._id_column = id_column

    async def run(
        self, intake: Intake, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll until cancelled; a lost connection raises, and the engine's supervisor
        restarts the source with backoff (the checkpoint says where to resume)."""
        import asyncpg

        options = self.options
        conn = await connect(options, f"integrator:{self.context.route}")
        try:
            await install_json_codecs(conn)
            queries = await self._queries(conn)
            task_status.started()
            position = await intake.load_checkpoint(CHECKPOINT)
            if position is None and options.start_after is not None:
                position = [options.start_after, None]
            while True:
                await intake.wait_accepting()
                try:
                    if position is None:
                        rows = await conn.fetch(queries[0])
                    elif self._id_column and position[1] is not None:
                        rows = await conn.fetch(queries[2], position[0], position[1])
                    else:
                        rows = await conn.fetch(queries[1], position[0])
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                    raise PostgresConnectorError(
                        f"polling {options.table}: {describe(err)}"
                    ) from err
                if rows:
                    await intake.submit([self._message(row) for row in rows])
                    last = rows[-1]
                    position = [last[CURSOR_ALIAS], last[ID_ALIAS] if self._id_column else None]
                    await intake.save_checkpoint(CHECKPOINT, position)
                if len(rows) < options.batch:
                    await anyio.sleep(float(options.interval))
        finally:
            await close_connection(conn)

    def _message(self, row: asyncpg.Record) -> Message:
        table, cursor = self.options.table, row[CURSOR_ALIAS]
        # With an id column a row may come again with a newer cursor (an update):
        # that is a new message, so the id holds both.
        message_id = f"{table}:{row[ID_ALIAS]}:{cursor}" if self._id_column else f"{table}:{cursor}"
        return Message(
            id=message_id, body=to_body(row), attributes={"table": table, "cursor": cursor}
        )

    async def _queries(self, conn: asyncpg.Connection) -> tuple[str, str, str]:
        """The first-run query, the query after a cursor, and after a (cursor, id) pair."""
        options = self.options
        cursor_type = await _column_type(conn, options.table, options.cursor)
        cursor = quote_ident(options.cursor)
        select = ", ".join(
            "*" if column == "*" else quote_ident(column) for column in options.columns
        )
        select += f", {cursor}::text AS {CURSOR_ALIAS}"
        order = cursor
        after_pair = ""
        if self._id_column:
            id_type = await _column_type(conn, options.table, self._id_column)
            id_col = quote_ident(self._id_column)
            select += f", {id_col}::text AS {ID_ALIAS}"
            order += f", {id_col}"
            after_pair = f"({cursor}, {id_col}) > ($1::text::{cursor_type}, $2::text::{id_type})"
        after = f"{cursor} > $1::text::{cursor_type}"
        extra = f"({options.where})" if options.where else "TRUE"
        base = f"SELECT {select} FROM {quote_table(options.table)} WHERE {extra}"
        tail = f"ORDER BY {order} LIMIT {options.batch}"
        return (
            f"{base} {tail}",
            f"{base} AND {after} {tail}",
            f"{base} AND {after_pair or after} {tail}",
        )


async def _column_type(conn: asyncpg.Connection, table: str, column: str) -> str:
    """The column's type name (without modifiers), or a clear error if it is not there."""
    import asyncpg

    try:
        found = await conn.fetchval(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attname = $2 AND attnum > 0"
            " AND NOT attisdropped",
            quote_table(table),
            column,
        )
    except asyncpg.UndefinedTableError as err:
        raise PostgresConnectorError(f"table {table!r} does not exist") from err
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise PostgresConnectorError(f"reading the columns of {table}: {describe(err)}") from err
    if found is None:
        raise PostgresConnectorError(f"table {table!r} has no column {column!r}")
    return str(found)
