"""/healthz, /readyz and the error format, over real loopback HTTP."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from integrator.http.server import ListenerError
from tests.admin.admin_support import ADMIN, Components, call, quick_stop


def ticks(out: Path, count: int = 3) -> str:
    return (
        ADMIN
        + f"""
        [routes.ticks]
        source = {{ type = "timer", interval = "10ms", count = {count} }}
        sinks = [{{ type = "file", path = "{out}" }}]
    """
    )


async def test_healthz_answers_while_the_daemon_runs(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        reply = await call(d, "GET", "/healthz")
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}


async def test_readyz_is_200_when_every_route_runs(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        reply = await call(d, "GET", "/readyz")
    assert reply.status == 200
    assert reply.json() == {"status": "ready"}


async def test_readyz_is_503_with_reasons_when_a_sink_keeps_failing(
    run_route, tmp_path: Path
) -> None:
    toml = (
        quick_stop(tmp_path)
        + ticks(tmp_path / "out.jsonl")
        + """
        [routes.crm]
        source = { type = "timer", interval = "1s" }
        sinks = [{ type = "broken" }]
    """
    )
    async with run_route(toml, Components()) as d:
        reply = await call(d, "GET", "/readyz")
    assert reply.status == 503
    assert reply.content_type == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == 503
    assert problem["reasons"] == [
        "crm/sink:broken is failing: ConnectionRefusedError: connection refused by 127.0.0.1:9"
    ]
    assert "crm/sink:broken" in problem["detail"]


async def test_readyz_is_503_when_the_store_cannot_be_written(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        await d.services.store.close()  # every later write fails
        reply = await call(d, "GET", "/readyz")
        await d.services.store.open()
    assert reply.status == 503
    store_reasons = [r for r in reply.json()["reasons"] if r.startswith("store: ")]
    assert len(store_reasons) == 1
    assert "closed" in store_reasons[0]


async def test_unknown_paths_answer_a_problem_document(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        missing = await call(d, "GET", "/nope")
        wrong_method = await call(d, "DELETE", "/healthz")
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"
    assert missing.json()["instance"] == "/nope"
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "GET,HEAD"


async def test_admin_listener_is_not_started_when_disabled(run_route, tmp_path: Path) -> None:
    toml = ticks(tmp_path / "out.jsonl").replace(ADMIN, "[admin]\nenabled = false\n")
    async with run_route(toml) as d:
        assert "admin" not in d.services.shared


async def test_a_taken_address_stops_the_daemon_with_a_clear_error(
    run_route, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        toml = ticks(tmp_path / "out.jsonl").replace("127.0.0.1:0", f"127.0.0.1:{port}")
        expected = re.escape(f"[admin] listen = '127.0.0.1:{port}': cannot listen: ")
        with pytest.RaisesGroup(
            pytest.RaisesExc(ListenerError, match=f"^{expected}.*in use"), flatten_subgroups=True
        ):
            async with run_route(toml):
                pass
