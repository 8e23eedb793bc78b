"""``integrator run`` as a subprocess for crash tests: config, process, store lock."""

from __future__ import annotations

import sqlite3
import time
import tomllib
from pathlib import Path

import pytest

from integrator.config import parse_config
from integrator.delivery.sqlite import SQLiteStore
from integrator.message import Message
from integrator.testing import (
    DaemonProcess,
    StoreLock,
    TimedOut,
    daemon_config,
    make_registry,
    read_jsonl,
    store_settled,
)

ROUTE = """
    [routes.r]
    source = {{ type = "timer", interval = "{interval}", count = {count}, body = "tick" }}
    sinks = [{{ type = "file", path = "{out}" }}]
"""


def route(out: Path, count: int = 3, interval: str = "10ms") -> str:
    return ROUTE.format(out=out, count=count, interval=interval)


def test_daemon_config_adds_state_and_free_ports_to_a_routes_snippet(tmp_path: Path) -> None:
    text = daemon_config(route(tmp_path / "out.jsonl"), tmp_path / "state")
    config = parse_config(text, tmp_path / "integrator.toml", make_registry()[1])
    assert config.daemon.state_dir == str(tmp_path / "state")
    assert (config.admin.listen, config.webhooks.listen) == ("127.0.0.1:0", "127.0.0.1:0")


def test_daemon_config_keeps_sections_the_text_has_and_adds_the_store_wait(
    tmp_path: Path,
) -> None:
    snippet = "[admin]\nenabled = false\n" + route(tmp_path / "out.jsonl")
    text = daemon_config(
        snippet, tmp_path, shutdown_timeout="2s", log_level="debug", store_busy_timeout=30
    )
    data = tomllib.loads(text)
    assert data["admin"] == {"enabled": False}
    assert data["daemon"] == {
        "state_dir": str(tmp_path),
        "shutdown_timeout": "2s",
        "log_level": "debug",
    }
    assert data["store"] == {"options": {"busy_timeout": 30}}
    assert "store" not in tomllib.loads(daemon_config(snippet, tmp_path))


def write_config(tmp_path: Path, routes: str, **options: object) -> Path:
    path = tmp_path / "integrator.toml"
    path.write_text(daemon_config(routes, tmp_path / "state", **options))  # type: ignore[arg-type]
    return path


async def test_a_daemon_runs_until_stopped_and_exits_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    daemon = DaemonProcess(write_config(tmp_path, route(out))).start()
    try:
        await daemon.wait_ready()
        await daemon.wait_until(lambda: len(read_jsonl(out)) == 3, "three ticks written")
        assert daemon.running
        assert await daemon.stop() == 0, daemon.output()
        assert not daemon.running and daemon.returncode == 0
        assert "stopped" in daemon.output()  # it shut down, logging as it went
    finally:
        daemon.close()


async def test_kill_is_a_sigkill_that_leaves_no_time_to_shut_down(tmp_path: Path) -> None:
    config = write_config(tmp_path, route(tmp_path / "out.jsonl", count=1000, interval="1s"))
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    await daemon.wait_ready()
    daemon.kill()
    assert daemon.returncode == -9
    assert "stopped" not in daemon.output()


async def test_a_wait_fails_at_once_with_the_log_when_the_daemon_exits(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[routes.r]\nsource = { type = 'no-such-source' }\n")
    daemon = DaemonProcess(config).start()
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)the daemon exited \(2\).*no-such-source"):
        await daemon.wait_ready(timeout=30)
    assert time.monotonic() - started < 15
    daemon.close()


async def test_a_wait_that_times_out_shows_the_log(tmp_path: Path) -> None:
    config = write_config(tmp_path, route(tmp_path / "out.jsonl", count=1, interval="10ms"))
    daemon = DaemonProcess(config).start()
    try:
        await daemon.wait_ready()
        with pytest.raises(TimedOut, match=r"(?s)waiting for 'never'.*the daemon's log:\n.*ready"):
            await daemon.wait_for_output("never", timeout=0.2)
    finally:
        daemon.close()
    assert daemon.returncode == -9  # close() kills what still runs


def test_using_a_daemon_before_starting_it_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        DaemonProcess(tmp_path / "integrator.toml").kill()


async def make_store(state: Path) -> None:
    store = SQLiteStore(None, state)
    await store.open()
    await store.close()


async def test_the_store_lock_blocks_writers_not_readers_until_released(tmp_path: Path) -> None:
    await make_store(tmp_path)
    db = tmp_path / "integrator.db"
    with StoreLock(tmp_path) as lock:
        writer = sqlite3.connect(db, isolation_level=None, timeout=0.1)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            writer.execute("BEGIN IMMEDIATE")
        reader = sqlite3.connect(db)
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
        reader.close()
        lock.release()
        assert not lock.held
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("ROLLBACK")
        writer.close()


def test_the_store_lock_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="start the daemon first"):
        StoreLock(tmp_path)
    assert not (tmp_path / "integrator.db").exists()


async def test_a_store_is_settled_only_once_nothing_waits_in_it(tmp_path: Path) -> None:
    store = SQLiteStore(None, tmp_path)
    await store.open()
    try:
        assert store_settled(tmp_path)
        await store.enqueue("r", [Message(body=1)])
        assert not store_settled(tmp_path)  # waiting for its route's chain
        (item,) = await store.inbox_after("r", 0, 10)
        await store.route_done([(item, {"out": [item.message]})])
        assert not store_settled(tmp_path)  # delivered, or not, but not recorded yet
        (delivery,) = await store.deliveries_after("r", "out", 0, 10)
        await store.delivered(delivery)
        assert store_settled(tmp_path)
    finally:
        await store.close()


async def test_store_settled_reads_a_store_whose_path_has_uri_characters(tmp_path: Path) -> None:
    state = tmp_path / "odd?name#with%20"
    await make_store(state)
    assert store_settled(state)


def test_store_settled_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="start the daemon first"):
        store_settled(tmp_path)
