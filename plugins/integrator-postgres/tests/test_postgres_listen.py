"""The postgres_listen source: NOTIFY payloads become messages; the connection recovers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from integrator_postgres.listen import ListenOptions, PostgresListenSource

from integrator.components import Context
from integrator.config import convert
from integrator.engine.health import State
from integrator.testing import RecordingIntake, TcpProxy, eventually, read_jsonl

pytestmark = pytest.mark.service("postgres")

URL = "postgresql://postgres@127.0.0.1:5432/test"


def listen_route(channel: str, out: Path, url: str = URL, **source: Any) -> str:
    extra = "\n".join(f"{key} = {json.dumps(value)}" for key, value in source.items())
    return f"""
        [routes.notes]
        sinks = [{{ type = "file", path = "{out}", fsync = "never", concurrency = 1 }}]

        [routes.notes.source]
        type = "postgres_listen"
        url = "{url}"
        channels = ["{channel}", "{channel}_other"]
        {extra}
    """


def channel_name(tmp_path: Path) -> str:
    return "ch_" + str(abs(hash(tmp_path)))


async def test_notifications_become_messages(db: Any, run_route: Any, tmp_path: Path) -> None:
    channel, out = channel_name(tmp_path), tmp_path / "out.jsonl"
    async with run_route(listen_route(channel, out), entrypoints=True) as daemon:
        await db.conn.execute("SELECT pg_notify($1, $2)", channel, '{"order": 7}')
        await db.conn.execute("SELECT pg_notify($1, $2)", f"{channel}_other", "plain text")
        await daemon.wait_delivered("notes", 2)

    first, second = read_jsonl(out)
    assert (first["body"], first["attributes"]["channel"]) == ({"order": 7}, channel)
    assert (second["body"], second["attributes"]["channel"]) == ("plain text", f"{channel}_other")
    assert first["id"] != second["id"]  # NOTIFY has no id: each gets a generated one


async def test_the_source_listens_again_after_an_outage(
    db: Any, run_route: Any, tmp_path: Path, postgres_url: Any
) -> None:
    channel, out = channel_name(tmp_path), tmp_path / "out.jsonl"
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        config = listen_route(channel, out, url=postgres_url(proxy.port), connect_timeout="1s")
        async with run_route(config, entrypoints=True) as daemon:
            health = daemon.services.health.component("notes/source")
            await db.conn.execute("SELECT pg_notify($1, 'before')", channel)
            await daemon.wait_delivered("notes", 1)

            proxy.cut()
            await daemon.wait_for(lambda: health.state is State.FAILING, 5, "the source to fail")
            proxy.restore()
            await daemon.wait_for(
                lambda: health.state is State.RUNNING, 10, "the source to listen again"
            )
            await db.conn.execute("SELECT pg_notify($1, 'after')", channel)
            await daemon.wait_delivered("notes", 2)

    assert [line["body"] for line in read_jsonl(out)] == ["before", "after"]
    assert "lost the LISTEN connection" in health.last_error


async def test_a_connection_the_server_ends_is_replaced(
    db: Any, run_route: Any, tmp_path: Path
) -> None:
    channel, out = channel_name(tmp_path), tmp_path / "out.jsonl"
    config = listen_route(channel, out, keepalive="200ms")
    async with run_route(config, entrypoints=True) as daemon:
        health = daemon.services.health.component("notes/source")
        killed = await db.conn.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'integrator:notes'"
        )
        assert killed
        await daemon.wait_for(lambda: health.restarts >= 1, 5, "the source to restart")
        await daemon.wait_for(lambda: health.state is State.RUNNING, 5, "the source to listen")
        await db.conn.execute("SELECT pg_notify($1, 'still here')", channel)
        await daemon.wait_delivered("notes", 1)


async def test_a_silently_dead_connection_is_noticed_by_the_keepalive(
    db: Any, run_route: Any, tmp_path: Path, postgres_url: Any
) -> None:
    channel, out = channel_name(tmp_path), tmp_path / "out.jsonl"
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        url = postgres_url(proxy.port)
        config = listen_route(channel, out, url=url, keepalive="300ms", connect_timeout="1s")
        async with run_route(config, entrypoints=True) as daemon:
            health = daemon.services.health.component("notes/source")
            proxy.freeze()  # no FIN, no RST: only the keepalive query can tell
            await daemon.wait_for(lambda: health.state is State.FAILING, 5, "the source to fail")
            assert "the LISTEN connection died" in health.last_error
            proxy.restore()
            await daemon.wait_for(
                lambda: health.state is State.RUNNING, 10, "the source to listen again"
            )
            await db.conn.execute("SELECT pg_notify($1, 'after')", channel)
            await daemon.wait_delivered("notes", 1)


async def test_a_json_payload_is_handed_to_the_store_as_the_text_received(
    db: Any, tmp_path: Path
) -> None:
    channel = channel_name(tmp_path)
    options = convert({"url": URL, "channels": [channel]}, ListenOptions)
    intake = RecordingIntake()
    async with anyio.create_task_group() as tg:
        await tg.start(PostgresListenSource(options, Context(route="notes")).run, intake)
        await db.conn.execute("SELECT pg_notify($1, $2)", channel, '{"order": 7}')
        await db.conn.execute("SELECT pg_notify($1, $2)", channel, "plain text")
        await eventually(lambda: len(intake.committed) == 2, "both notifications")
        tg.cancel_scope.cancel()
    assert intake.offered_json == [b'{"order": 7}', None]
    assert [m.body for m in intake.offered] == [{"order": 7}, "plain text"]
