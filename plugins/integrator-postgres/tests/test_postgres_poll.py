"""The postgres_poll source, through a real daemon: rows in order, checkpointed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from integrator_postgres import PollOptions, PostgresPollSource
from integrator_postgres.poll import CHECKPOINT

from integrator.components import Context
from integrator.config import convert
from integrator.engine.health import State
from integrator.errors import StoreError
from integrator.testing import RecordingIntake, TcpProxy, read_jsonl

pytestmark = pytest.mark.service("postgres")

URL = "postgresql://postgres@127.0.0.1:5432/test"


def poll_route(table: str, out: Path, url: str = URL, **source: Any) -> str:
    extra = "\n".join(f"{key} = {json.dumps(value)}" for key, value in source.items())
    return f"""
        [routes.rows]
        dedupe_window = "1h"
        retry = {{ initial = "100ms", max = "500ms" }}
        sinks = [{{ type = "file", path = "{out}", fsync = "never", concurrency = 1 }}]

        [routes.rows.source]
        type = "postgres_poll"
        url = "{url}"
        table = "{table}"
        interval = "50ms"
        {extra}
    """


async def test_rows_become_messages_in_cursor_order(
    db: Any, run_route: Any, tmp_path: Path
) -> None:
    table = await db.table("id bigserial primary key, name text, at timestamptz, doc jsonb")
    await db.conn.execute(
        f"INSERT INTO {table} (name, at, doc) VALUES"
        " ('a', '2024-01-02 03:04:05+00', '{\"k\": [1]}'), ('b', NULL, NULL)"
    )
    out = tmp_path / "out.jsonl"
    async with run_route(poll_route(table, out, cursor="id"), entrypoints=True) as daemon:
        await daemon.wait_delivered("rows", 2)

    first, second = read_jsonl(out)
    assert first["id"] == f"{table}:1"
    assert first["body"] == {
        "id": 1,
        "name": "a",
        "at": "2024-01-02T03:04:05Z",
        "doc": {"k": [1]},
    }
    assert first["attributes"] == {"table": table, "cursor": "1"}
    assert second["body"] == {"id": 2, "name": "b", "at": None, "doc": None}


async def test_a_restart_resumes_after_the_checkpoint(
    db: Any, run_route: Any, tmp_path: Path
) -> None:
    table = await db.table("id int primary key")
    await db.conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 5)")
    out = tmp_path / "out.jsonl"
    config = poll_route(table, out, cursor="id", batch=2)
    async with run_route(config, entrypoints=True) as daemon:
        await daemon.wait_delivered("rows", 5)
    await db.conn.execute(f"INSERT INTO {table} VALUES (6), (7)")
    async with run_route(config, entrypoints=True) as daemon:  # same state directory
        await daemon.wait_delivered("rows", 2)

    assert [line["body"]["id"] for line in read_jsonl(out)] == [1, 2, 3, 4, 5, 6, 7]


async def test_rows_sharing_a_timestamp_are_not_skipped_across_batches(
    db: Any, run_route: Any, tmp_path: Path
) -> None:
    table = await db.table("id int primary key, updated_at timestamptz not null")
    await db.conn.execute(
        f"INSERT INTO {table} SELECT n, '2024-01-01 00:00:00+00' FROM generate_series(1, 5) n"
    )
    out = tmp_path / "out.jsonl"
    config = poll_route(table, out, cursor="updated_at", id_column="id", batch=2)
    async with run_route(config, entrypoints=True) as daemon:
        await daemon.wait_delivered("rows", 5)
        await db.conn.execute(f"UPDATE {table} SET updated_at = updated_at + interval '1s'")
        await daemon.wait_delivered("rows", 10)  # an update is a new message

    seen = read_jsonl(out)
    assert [line["body"]["id"] for line in seen] == [1, 2, 3, 4, 5] * 2
    assert seen[0]["id"] == f"{table}:1:2024-01-01 00:00:00+00"


async def test_where_and_columns_narrow_what_is_read(
    db: Any, run_route: Any, tmp_path: Path
) -> None:
    table = await db.table("id int primary key, status text, secret text")
    await db.conn.execute(
        f"INSERT INTO {table} VALUES (1, 'paid', 's'), (2, 'open', 's'), (3, 'paid', 's')"
    )
    out = tmp_path / "out.jsonl"
    config = poll_route(table, out, cursor="id", where="status = 'paid'", columns=["id", "status"])
    async with run_route(config, entrypoints=True) as daemon:
        await daemon.wait_delivered("rows", 2)

    assert [line["body"] for line in read_jsonl(out)] == [
        {"id": 1, "status": "paid"},
        {"id": 3, "status": "paid"},
    ]


async def test_an_outage_loses_no_row(
    db: Any, run_route: Any, tmp_path: Path, postgres_url: Any
) -> None:
    table = await db.table("id int primary key")
    out = tmp_path / "out.jsonl"
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        config = poll_route(
            table, out, url=postgres_url(proxy.port), cursor="id", connect_timeout="1s"
        )
        async with run_route(config, entrypoints=True) as daemon:
            health = daemon.services.health.component("rows/source")
            await db.conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 10)")
            await daemon.wait_delivered("rows", 10)

            proxy.cut()
            await daemon.wait_for(lambda: health.state is State.FAILING, 5, "the source to fail")
            await db.conn.execute(f"INSERT INTO {table} SELECT generate_series(11, 20)")
            proxy.restore()
            await db.conn.execute(f"INSERT INTO {table} SELECT generate_series(21, 30)")
            await daemon.wait_delivered("rows", 30, timeout=15)
            assert health.state is State.RUNNING

    ids = [line["body"]["id"] for line in read_jsonl(out)]
    assert sorted(ids) == list(range(1, 31))  # each row exactly once


async def test_a_missing_table_is_reported_on_the_route_health(
    run_route: Any, tmp_path: Path
) -> None:
    config = poll_route("no_such_table_here", tmp_path / "out.jsonl", cursor="id")
    async with run_route(config, entrypoints=True) as daemon:
        health = daemon.services.health.component("rows/source")
        await daemon.wait_for(lambda: health.state is State.FAILING, 5, "the source to fail")
    assert "table 'no_such_table_here' does not exist" in health.last_error


async def test_rows_the_store_refused_leave_the_checkpoint_where_it_was(db: Any) -> None:
    table = await db.table("id int primary key")
    await db.conn.execute(f"INSERT INTO {table} VALUES (1), (2), (3)")
    options = convert({"url": URL, "table": table, "cursor": "id"}, PollOptions)
    intake = RecordingIntake(checkpoints={CHECKPOINT: ["1", None]})
    intake.fail = StoreError("the store is full")
    with pytest.raises(StoreError), anyio.fail_after(5):
        await PostgresPollSource(options, Context(route="unit")).run(intake)
    assert (len(intake.offered), intake.saved) == (2, [])  # rows 2 and 3 offered, nothing saved
