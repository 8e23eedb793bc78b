"""The postgres sink: column mapping, insert and upsert, batching, error classes."""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from integrator_postgres import PostgresSink, PostgresSinkOptions

from integrator import DeliveryError, Message
from integrator.components import Context
from integrator.config import convert
from integrator.testing import TcpProxy

pytestmark = pytest.mark.service("postgres")

URL = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def open_sink(table: str, columns: dict[str, str], **options: Any) -> AsyncIterator[Any]:
    values = {"url": URL, "table": table, "columns": columns, **options}
    sink = PostgresSink(convert(values, PostgresSinkOptions), Context(route="unit"))
    await sink.open()
    try:
        yield sink
    finally:
        await sink.close()


async def deliver_all(sink: Any, messages: list[Message]) -> dict[str, BaseException | None]:
    """Deliver concurrently, as the engine's deliverers do; the outcome per message id."""
    outcomes: dict[str, BaseException | None] = {}

    async def one(message: Message) -> None:
        try:
            await sink.deliver(message)
            outcomes[message.id] = None
        except DeliveryError as err:
            outcomes[message.id] = err

    async with anyio.create_task_group() as tg:
        for message in messages:
            tg.start_soon(one, message)
    return outcomes


async def test_columns_are_filled_from_expressions_over_the_message(db: Any) -> None:
    table = await db.table(
        "id text primary key, customer text, total numeric(10,2), paid_at timestamptz,"
        " tags text[], doc jsonb, tenant text, quantity int, ok boolean"
    )
    columns = {
        "id": "id",
        "customer": "body.customer.name",
        "total": "body.total",
        "paid_at": "body.paid_at",
        "tags": "body.tags",
        "doc": "body",
        "tenant": 'headers."x-tenant"',
        "quantity": "length(body.tags)",
        "ok": "body.ok",
    }
    body = {
        "customer": {"name": "Ada"},
        "total": "12.50",
        "paid_at": "2024-05-01T10:00:00Z",
        "tags": ["a", 'quo"te', "back\\slash"],
        "ok": True,
    }
    async with open_sink(table, columns) as sink:
        await sink.deliver(Message(id="m-1", body=body, headers={"x-tenant": "acme"}))

    (row,) = await db.rows(table)
    assert json.loads(row.pop("doc")) == body  # jsonb, read back as text here
    assert row == {
        "id": "m-1",
        "customer": "Ada",
        "total": decimal.Decimal("12.50"),
        "paid_at": datetime.datetime(2024, 5, 1, 10, 0, tzinfo=datetime.UTC),
        "tags": ["a", 'quo"te', "back\\slash"],
        "tenant": "acme",
        "quantity": 3,
        "ok": True,
    }


async def test_upsert_updates_the_row_with_the_same_key(db: Any) -> None:
    table = await db.table("sku text primary key, stock int, name text")
    columns = {"sku": "body.sku", "stock": "body.stock", "name": "body.name"}
    async with open_sink(table, columns, mode="upsert", conflict=["sku"], update=["stock"]) as sink:
        await sink.deliver(Message(body={"sku": "A", "stock": 1, "name": "first"}))
        await sink.deliver(Message(body={"sku": "A", "stock": 7, "name": "ignored"}))
        await sink.deliver(Message(body={"sku": "B", "stock": 2, "name": "bee"}))

    assert await db.rows(table) == [
        {"sku": "A", "stock": 7, "name": "first"},
        {"sku": "B", "stock": 2, "name": "bee"},
    ]


async def test_insert_with_a_conflict_key_makes_a_redelivery_harmless(db: Any) -> None:
    table = await db.table("message_id text primary key, body jsonb")
    columns = {"message_id": "id", "body": "body"}
    message = Message(body={"n": 1})
    async with open_sink(table, columns, conflict=["message_id"]) as sink:
        await sink.deliver(message)
        await sink.deliver(message.evolve(body={"n": 2}))  # same id: a retry of the same

    assert [row["message_id"] for row in await db.rows(table)] == [message.id]


async def test_concurrent_deliveries_share_one_transaction(db: Any) -> None:
    table = await db.table("n int primary key")
    messages = [Message(body={"n": n}) for n in range(20)]
    async with open_sink(table, {"n": "body.n"}, batch_wait="500ms") as sink:
        outcomes = await deliver_all(sink, messages)

    assert set(outcomes.values()) == {None}
    # Rows written by one transaction carry its transaction id in xmin.
    xids = await db.conn.fetchval(f"SELECT count(DISTINCT xmin::text) FROM {table}")
    assert (await db.conn.fetchval(f"SELECT count(*) FROM {table}"), xids) == (20, 1)


async def test_batches_are_no_bigger_than_batch_size(db: Any) -> None:
    table = await db.table("n int primary key")
    messages = [Message(body={"n": n}) for n in range(10)]
    async with open_sink(table, {"n": "body.n"}, batch_size=4, batch_wait="500ms") as sink:
        await deliver_all(sink, messages)

    xids = await db.conn.fetchval(f"SELECT count(DISTINCT xmin::text) FROM {table}")
    assert xids == 3  # 4 + 4 + 2


async def test_a_bad_row_fails_alone_and_is_not_retriable(db: Any) -> None:
    table = await db.table("n int primary key, name text not null")
    good = [Message(body={"n": n, "name": f"n{n}"}) for n in range(4)]
    bad = Message(body={"n": 99})  # no name: violates NOT NULL
    async with open_sink(table, {"n": "body.n", "name": "body.name"}, batch_wait="300ms") as sink:
        outcomes = await deliver_all(sink, [*good, bad])

    assert [outcomes[m.id] for m in good] == [None] * 4
    error = outcomes[bad.id]
    assert isinstance(error, DeliveryError) and not error.retriable
    assert "NotNullViolationError" in error.reason
    assert [row["n"] for row in await db.rows(table)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("columns", "body", "expected"),
    [
        ({"n": "body.n"}, {"n": "not a number"}, "InvalidTextRepresentationError"),
        ({"n": "body.n", "nope": "body.n"}, {"n": 1}, "no column(s) ['nope']"),
    ],
)
async def test_data_and_schema_errors_are_not_retriable(
    db: Any, columns: dict[str, str], body: Any, expected: str
) -> None:
    table = await db.table("n int")
    async with open_sink(table, columns) as sink:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(Message(body=body))
    assert not caught.value.retriable
    assert expected in caught.value.reason


async def test_a_lost_database_is_a_retriable_error(
    db: Any, postgres_url: Callable[..., str]
) -> None:
    table = await db.table("n int")
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        values = {"url": postgres_url(proxy.port), "table": table, "columns": {"n": "body.n"}}
        values |= {"connect_timeout": "1s"}
        sink = PostgresSink(convert(values, PostgresSinkOptions), Context(route="unit"))
        await sink.open()
        try:
            await sink.deliver(Message(body={"n": 1}))
            proxy.cut()
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(Message(body={"n": 2}))
            assert caught.value.retriable
            proxy.restore()
            await sink.deliver(Message(body={"n": 3}))
        finally:
            await sink.close()
    assert [row["n"] for row in await db.rows(table)] == [1, 3]


def test_upsert_without_a_conflict_key_is_a_config_error() -> None:
    options = convert(
        {"table": "t", "columns": {"a": "body.a"}, "mode": "upsert"}, PostgresSinkOptions
    )
    with pytest.raises(ValueError, match="needs conflict"):
        options.validate()


def test_a_broken_expression_is_a_config_error() -> None:
    options = convert({"table": "t", "columns": {"a": "body.("}}, PostgresSinkOptions)
    with pytest.raises(ValueError, match=r"columns\.a"):
        options.validate()
