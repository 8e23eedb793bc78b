"""``postgres`` sink: INSERT or UPSERT one row per message, many messages per transaction.

``columns`` maps each column to an expression over the message (JMESPath, as in the
``map`` middleware: ``body.id``, ``id``, ``headers."x-tenant"``). Concurrent
deliveries are written together by :class:`~integrator_postgres.batching.Batcher`;
each ``deliver`` returns once the transaction holding its row has committed. When a
batch fails on bad data, its rows are written again one at a time, so one bad row
goes to the dead-letter queue alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio

from integrator import DeliveryError, Duration, Message, Sink
from integrator.transforms.expressions import Expression, ExpressionError, compile_expression
from integrator_postgres.batching import Batcher
from integrator_postgres.codecs import ValueConversionError, to_text
from integrator_postgres.connection import (
    ConnectionOptions,
    delivery_error,
    is_retriable,
    quote_ident,
    quote_table,
)

if TYPE_CHECKING:
    import asyncpg

Row = tuple[str | None, ...]


class PostgresSinkOptions(ConnectionOptions, forbid_unknown_fields=True, kw_only=True):
    #: The table to write, ``name`` or ``schema.name``.
    table: str
    #: Column name -> expression over the message, e.g. ``{ id = "id", total = "body.total" }``.
    columns: dict[str, str]
    #: "insert", or "upsert" (update the row that conflicts on ``conflict``).
    mode: Literal["insert", "upsert"] = "insert"
    #: The unique columns that identify a row (``ON CONFLICT``). With "insert" a
    #: conflicting row is skipped: inserting with ``conflict = ["id"]`` and
    #: ``id = "id"`` makes redeliveries harmless.
    conflict: list[str] = []
    #: Columns an upsert overwrites; default every mapped column outside ``conflict``.
    update: list[str] | None = None
    #: Most rows per transaction, and how long the first row waits for company.
    batch_size: int = 100
    batch_wait: Duration = Duration(0.02)
    #: Connections kept open to the database.
    pool_size: int = 4

    def validate(self) -> None:
        super().validate()
        if not self.columns:
            raise ValueError("columns must map at least one column to an expression")
        for column, expression in self.columns.items():
            try:
                compile_expression(expression)
            except ExpressionError as err:
                raise ValueError(f"columns.{column}: {err}") from err
        unknown = [c for c in [*self.conflict, *(self.update or [])] if c not in self.columns]
        if unknown:
            raise ValueError(f"conflict/update name columns that are not in columns: {unknown}")
        if self.mode == "upsert" and not self.conflict:
            raise ValueError('mode "upsert" needs conflict = [the unique columns]')
        if self.batch_size < 1 or self.pool_size < 1:
            raise ValueError("batch_size and pool_size must be at least 1")


def insert_statement(options: PostgresSinkOptions, types: dict[str, str]) -> str:
    """The INSERT for one row: every value arrives as text and is cast in SQL."""
    columns = list(options.columns)
    names = ", ".join(quote_ident(c) for c in columns)
    values = ", ".join(f"${i}::text::{types[c]}" for i, c in enumerate(columns, start=1))
    sql = f"INSERT INTO {quote_table(options.table)} ({names}) VALUES ({values})"
    if not options.conflict:
        return sql
    target = ", ".join(quote_ident(c) for c in options.conflict)
    updates = (
        options.update
        if options.update is not None
        else [c for c in columns if c not in options.conflict]
    )
    if options.mode == "insert" or not updates:
        return f"{sql} ON CONFLICT ({target}) DO NOTHING"
    assignments = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in updates)
    return f"{sql} ON CONFLICT ({target}) DO UPDATE SET {assignments}"


class PostgresSink(Sink):
    Options = PostgresSinkOptions
    description = "INSERT / UPSERT rows mapped from messages, batched in transactions"
    options: PostgresSinkOptions

    def __init__(self, options: PostgresSinkOptions, context: Any) -> None:
        super().__init__(options, context)
        self._expressions: dict[str, Expression] = {
            column: compile_expression(text) for column, text in options.columns.items()
        }
        self._pool: asyncpg.Pool | None = None
        self._types: dict[str, str] | None = None
        self._sql = ""
        self._batcher: Batcher[Row] = Batcher(
            self._write, size=options.batch_size, wait=float(options.batch_wait)
        )

    async def open(self) -> None:
        import asyncpg

        options = self.options
        self._pool = await asyncpg.create_pool(
            min_size=1,
            max_size=options.pool_size,
            **options.connect_kwargs(f"integrator:{self.context.route}:sink"),
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.move_on_after(5):  # a dead peer never answers a polite close
                await pool.close()
            pool.terminate()

    async def deliver(self, message: Message) -> None:
        await self._batcher.add(await self._row(message))

    async def _row(self, message: Message) -> Row:
        types = await self._column_types()
        data = message.to_dict()
        values: list[str | None] = []
        for column, expression in self._expressions.items():
            try:
                values.append(to_text(expression.evaluate(data), types[column]))
            except (ExpressionError, ValueConversionError) as err:
                raise DeliveryError(f"column {column}: {err}", retriable=False) from err
        return tuple(values)

    async def _column_types(self) -> dict[str, str]:
        """Each mapped column's type, read once from the catalog."""
        if self._types is not None:
            return self._types
        pool = self._require_pool()
        table = self.options.table
        try:
            rows = await pool.fetch(
                "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                quote_table(table),
            )
        except Exception as err:
            raise delivery_error(err, f"reading the columns of {table}") from err
        types = {row[0]: row[1] for row in rows}
        missing = [c for c in self.options.columns if c not in types]
        if missing:
            raise DeliveryError(f"table {table} has no column(s) {missing}", retriable=False)
        self._types = {c: types[c] for c in self.options.columns}
        self._sql = insert_statement(self.options, self._types)
        return self._types

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DeliveryError("the postgres sink is not open")
        return self._pool

    async def _write(self, rows: Sequence[Row]) -> list[BaseException | None]:
        """Write a batch in one transaction; after a data error, row by row."""
        import asyncpg

        pool = self._require_pool()
        timeout = float(self.options.timeout)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(self._sql, rows, timeout=timeout)
            return [None] * len(rows)
        except Exception as err:
            if is_retriable(err) or len(rows) == 1:
                return [delivery_error(err, f"writing to {self.options.table}")] * len(rows)
        outcomes: list[BaseException | None] = []
        try:
            async with pool.acquire() as conn:
                for row in rows:
                    try:
                        await conn.execute(self._sql, *row, timeout=timeout)
                        outcomes.append(None)
                    except asyncpg.PostgresError as err:
                        outcomes.append(delivery_error(err, f"writing to {self.options.table}"))
        except Exception as err:  # the connection went away half-way: retry the rest
            failed = delivery_error(err, f"writing to {self.options.table}")
            outcomes.extend([failed] * (len(rows) - len(outcomes)))
        return outcomes

    def __repr__(self) -> str:
        return f"PostgresSink(table={self.options.table!r}, url={self.options.safe_url()!r})"
