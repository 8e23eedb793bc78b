"""``kill -9`` after rows were read but before the store committed them: the checkpoint
has not moved past them, so the next daemon reads them again.

The daemon runs as a real ``integrator run`` process. To stop it exactly there, the
test holds the store's write lock (as a slow disk would) and waits, through
``pg_stat_activity``, until the daemon's poll that started after the row was
committed has finished; then it kills the process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from integrator.delivery.sqlite import SQLiteStore

pytestmark = pytest.mark.service("postgres")

INTEGRATOR = str(Path(sys.executable).with_name("integrator"))
URL = "postgresql://postgres@127.0.0.1:5432/test"


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [INTEGRATOR, "run", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )


async def wait_lines(path: Path, count: int, daemon: subprocess.Popen[bytes], log: Path) -> list:
    with anyio.move_on_after(20):
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
            assert daemon.poll() is None, f"the daemon exited:\n{log.read_text()}"
            await anyio.sleep(0.05)
    raise AssertionError(f"{path} has fewer than {count} lines; daemon log:\n{log.read_text()}")


async def saved_checkpoint(state: Path, route: str) -> Any:
    store = SQLiteStore(None, state)
    await store.open()
    try:
        return await store.get_state(f"checkpoint:{route}:cursor")
    finally:
        await store.close()


async def test_rows_read_but_not_committed_when_killed_are_read_again(
    db: Any, tmp_path: Path, eventually: Any
) -> None:
    table = await db.table("id int primary key, note text")
    await db.conn.execute(f"INSERT INTO {table} VALUES (1, 'before')")
    out, log, state = tmp_path / "out.jsonl", tmp_path / "daemon.log", tmp_path / "state"
    route = f"kill_{table}"
    config = tmp_path / "integrator.toml"
    config.write_text(f"""
        [daemon]
        state_dir = "{state}"
        shutdown_timeout = "2s"

        [admin]
        enabled = false

        [store]
        options = {{ busy_timeout = 60 }}

        [routes.{route}]
        dedupe_window = "1h"
        sinks = [{{ type = "file", path = "{out}", fsync = "never" }}]

        [routes.{route}.source]
        type = "postgres_poll"
        url = "{URL}"
        table = "{table}"
        cursor = "id"
        interval = "50ms"
    """)
    daemon = start_daemon(config, log)
    try:
        await wait_lines(out, 1, daemon, log)  # the daemon is up and polling

        lock = sqlite3.connect(state / "integrator.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the store cannot commit from now on
        await db.conn.execute(f"INSERT INTO {table} VALUES (2, 'during')")
        committed_at = await db.conn.fetchval("SELECT clock_timestamp()")

        async def polled_since() -> bool:
            # A poll that started after the commit saw row 2 (read committed); once it
            # is over, the daemon holds the row and waits for the store.
            return bool(
                await db.conn.fetchval(
                    "SELECT query_start > $1 AND state = 'idle' FROM pg_stat_activity"
                    " WHERE application_name = $2",
                    committed_at,
                    f"integrator:{route}",
                )
            )

        await eventually(polled_since, 10, "the daemon to read row 2")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        lock.rollback()
        lock.close()
        assert await saved_checkpoint(state, route) == ["1", None]

        daemon = start_daemon(config, log)
        seen = await wait_lines(out, 2, daemon, log)
        assert [line["body"] for line in seen] == [
            {"id": 1, "note": "before"},
            {"id": 2, "note": "during"},
        ]
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(10)
