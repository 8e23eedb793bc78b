"""Rows from one table into another through a real daemon, and bad rows into the DLQ."""

from __future__ import annotations

from typing import Any

import pytest

from integrator.testing import eventually

pytestmark = pytest.mark.service("postgres")

URL = "postgresql://postgres@127.0.0.1:5432/test"


async def test_rows_polled_from_one_table_are_upserted_into_another(
    db: Any, run_route: Any
) -> None:
    orders = await db.table("id int primary key, customer text, total numeric, placed timestamptz")
    totals = await db.table("customer text primary key, last_total numeric, last_order int")
    await db.conn.execute(
        f"INSERT INTO {orders} VALUES"
        " (1, 'ada', 10.5, '2024-01-01T00:00:00Z'), (2, 'bob', 3, '2024-01-02T00:00:00Z'),"
        " (3, 'ada', 7.25, '2024-01-03T00:00:00Z')"
    )
    config = f"""
        [[routes.totals.sinks]]
        type = "postgres"
        url = "{URL}"
        table = "{totals}"
        mode = "upsert"
        conflict = ["customer"]
        concurrency = 1
        columns = {{ customer = "body.customer", last_total = "body.total", last_order = "body.id" }}

        [routes.totals.source]
        type = "postgres_poll"
        url = "{URL}"
        table = "{orders}"
        cursor = "id"
        interval = "50ms"
    """
    async with run_route(config, entrypoints=True) as daemon:
        await daemon.wait_delivered("totals", 3)

    rows = await db.rows(totals)
    assert [(r["customer"], str(r["last_total"]), r["last_order"]) for r in rows] == [
        ("ada", "7.25", 3),
        ("bob", "3", 2),
    ]


async def test_a_row_the_table_refuses_goes_to_the_dead_letter_queue(
    db: Any, run_route: Any
) -> None:
    target = await db.table("n int primary key check (n > 0)")
    config = f"""
        [routes.checked]
        sinks = [{{ type = "postgres", url = "{URL}", table = "{target}", columns = {{ n = "body.n" }} }}]

        [routes.checked.source]
        type = "timer"
        interval = "10ms"
        count = 1
        body = {{ n = -1 }}
    """
    async with run_route(config, entrypoints=True) as daemon:
        store = daemon.services.store

        async def dead_lettered() -> bool:
            return bool(await store.dlq_count("checked"))

        await eventually(dead_lettered, "the dead letter")
        (entry,) = await store.dlq_list(route="checked")

    assert entry.attempts == 1  # not retried: a check violation stays one
    assert "CheckViolationError" in entry.last_error
    assert await db.rows(target) == []
