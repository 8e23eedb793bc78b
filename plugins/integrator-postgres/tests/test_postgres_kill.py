"""``kill -9`` after rows were read but before the store committed them: the checkpoint
has not moved past them, so the next daemon reads them again.

The daemon runs as a real ``integrator run`` process. To stop it exactly there, the
test holds the store's write lock (as a slow disk would) and waits, through
``pg_stat_activity``, until the daemon's poll that started after the row was
committed has finished; then it kills the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from integrator.delivery.sqlite import SQLiteStore
from integrator.testing import StoreLock, daemon_config, eventually, read_jsonl, store_settled

pytestmark = pytest.mark.service("postgres")

URL = "postgresql://postgres@127.0.0.1:5432/test"


async def saved_checkpoint(state: Path, route: str) -> Any:
    store = SQLiteStore(None, state)
    await store.open()
    try:
        return await store.get_state(f"checkpoint:{route}:cursor")
    finally:
        await store.close()


async def test_rows_read_but_not_committed_when_killed_are_read_again(
    db: Any, tmp_path: Path, daemon_process: Any
) -> None:
    table = await db.table("id int primary key, note text")
    await db.conn.execute(f"INSERT INTO {table} VALUES (1, 'before')")
    out, state = tmp_path / "out.jsonl", tmp_path / "state"
    route = f"kill_{table}"
    config = tmp_path / "integrator.toml"
    routes = f"""
        [routes.{route}]
        dedupe_window = "1h"
        sinks = [{{ type = "file", path = "{out}", fsync = "never" }}]

        [routes.{route}.source]
        type = "postgres_poll"
        url = "{URL}"
        table = "{table}"
        cursor = "id"
        interval = "50ms"
    """
    config.write_text(daemon_config(routes, state, shutdown_timeout="2s", store_busy_timeout=60))
    daemon = daemon_process(config)
    await daemon.wait_until(lambda: read_jsonl(out), "the daemon to poll")
    await daemon.wait_until(lambda: store_settled(state), "the first delivery to be recorded")

    with StoreLock(state):  # the store cannot commit from now on
        before = await db.conn.fetchval("SELECT clock_timestamp()")
        await db.conn.execute(f"INSERT INTO {table} VALUES (2, 'during')")
        after = await db.conn.fetchval("SELECT clock_timestamp()")

        async def polled_since() -> bool:
            # A poll that started after the commit saw row 2 (read committed); once it
            # is over, the daemon holds the row and waits for the store. A poll that
            # started during the INSERT may have seen it too: then no poll follows (the
            # loop waits for the store), which shows as the connection staying idle far
            # longer than the 50 ms interval.
            return bool(
                await db.conn.fetchval(
                    "SELECT state = 'idle' AND (query_start > $1 OR (query_start > $2"
                    " AND clock_timestamp() - state_change > interval '1 second'))"
                    " FROM pg_stat_activity WHERE application_name = $3",
                    after,
                    before,
                    f"integrator:{route}",
                )
            )

        await eventually(polled_since, "the daemon to read row 2")
        daemon.kill()
    assert await saved_checkpoint(state, route) == ["1", None]

    daemon = daemon_process(config)
    await daemon.wait_until(lambda: len(read_jsonl(out)) >= 2, "row 2 after the restart")
    assert [line["body"] for line in read_jsonl(out)] == [
        {"id": 1, "note": "before"},
        {"id": 2, "note": "during"},
    ]
