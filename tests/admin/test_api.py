"""The admin API over loopback HTTP: routes, pause/resume, poll now, DLQ, reload."""

from __future__ import annotations

from pathlib import Path

import anyio

from tests.admin.admin_support import ADMIN, Components, call


def ticks(out: Path) -> str:
    return (
        ADMIN
        + f"""
        [routes.ticks]
        description = "heartbeat to a file"
        source = {{ type = "timer", interval = "10ms" }}
        sinks = [{{ type = "file", path = "{out}" }}]
    """
    )


def refused(count: int = 3) -> str:
    return f"""
        [routes.refused]
        source = {{ type = "timer", interval = "5ms", count = {count} }}
        sinks = [{{ type = "rejecting" }}]
    """


async def test_routes_lists_state_source_sinks_and_counters(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        await d.wait_delivered("ticks", 2)
        reply = await call(d, "GET", "/api/routes")
    assert reply.status == 200
    [route] = reply.json()
    assert route["name"] == "ticks"
    assert route["state"] == "running"
    assert route["health"] == "ok"
    assert route["source"] == "timer"
    assert route["description"] == "heartbeat to a file"
    assert route["received"] >= 2
    [sink] = route["sinks"]
    assert sink["name"] == "file" and sink["type"] == "file"
    assert sink["delivered"] >= 2
    assert route["last_success_at"] is not None
    assert route["dlq"] == 0
    assert {c["name"] for c in route["components"]} == {
        "ticks/chain",
        "ticks/sink:file",
        "ticks/source",
    }


async def test_a_failing_route_shows_its_last_error_and_dead_letters(
    run_route, tmp_path: Path
) -> None:
    async with run_route(ADMIN + refused(), Components()) as d:
        await d.wait_for(lambda: d.services.stats["refused"].sink("rejecting").dead == 3)
        reply = await call(d, "GET", "/api/routes/refused")
    route = reply.json()
    assert route["health"] == "degraded"
    assert route["dlq"] == 3
    assert route["last_error"] == "remote refused the message (api key none)"
    assert route["sinks"][0]["dead"] == 3


async def test_unknown_route_is_a_404_problem(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        reply = await call(d, "POST", "/api/routes/nope/pause")
    assert reply.status == 404
    assert reply.content_type == "application/problem+json"
    assert reply.json()["detail"] == "no route named 'nope'"


async def test_pause_stops_intake_and_resume_restarts_it(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        stats = d.services.stats["ticks"]
        await d.wait_for(lambda: stats.received >= 2)
        paused = await call(d, "POST", "/api/routes/ticks/pause")
        assert paused.status == 200
        assert paused.json()["state"] == "paused"
        await anyio.sleep(0.05)  # a submit already under way may still land
        frozen = stats.received
        await anyio.sleep(0.2)  # twenty intervals of the timer
        assert stats.received == frozen
        resumed = await call(d, "POST", "/api/routes/ticks/resume")
        assert resumed.json()["state"] == "running"
        await d.wait_for(lambda: stats.received >= frozen + 2, what="intake after resume")


async def test_poll_now_triggers_a_source_that_supports_it(run_route, tmp_path: Path) -> None:
    toml = (
        ADMIN
        + f"""
        [routes.manual]
        source = {{ type = "manual" }}
        sinks = [{{ type = "file", path = "{tmp_path / "out.jsonl"}" }}]
    """
    )
    async with run_route(toml, Components()) as d:
        reply = await call(d, "POST", "/api/routes/manual/poll")
        assert reply.status == 202
        assert reply.json() == {"route": "manual", "triggered": True}
        await d.wait_delivered("manual", 1)


async def test_poll_now_is_a_409_for_a_source_without_trigger(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        reply = await call(d, "POST", "/api/routes/ticks/poll")
    assert reply.status == 409
    assert "'timer' source cannot be triggered" in reply.json()["detail"]


async def test_dlq_lists_and_shows_dead_letters(run_route, tmp_path: Path) -> None:
    async with run_route(ADMIN + refused(), Components()) as d:
        await d.wait_for(lambda: d.services.stats["refused"].sink("rejecting").dead == 3)
        listing = await call(d, "GET", "/api/dlq?route=refused&limit=2")
        entry = listing.json()["entries"][0]
        shown = await call(d, "GET", f"/api/dlq/{entry['id']}")
        missing = await call(d, "GET", "/api/dlq/999999")
        bad_limit = await call(d, "GET", "/api/dlq?limit=0")
    assert listing.status == 200
    assert listing.json()["total"] == 3
    assert len(listing.json()["entries"]) == 2
    assert entry["route"] == "refused" and entry["sink"] == "rejecting"
    assert entry["last_error"] == "remote refused the message (api key none)"
    assert shown.json()["message"]["body"]["tick"] >= 1
    assert missing.status == 404
    assert bad_limit.status == 400


async def test_dlq_replay_redelivers_dead_letters(run_route, tmp_path: Path) -> None:
    components = Components()
    async with run_route(ADMIN + refused(), components) as d:
        sink = d.services.stats["refused"].sink("rejecting")
        await d.wait_for(lambda: sink.dead == 3)
        components.switch.failing = False  # the remote is fixed
        reply = await call(d, "POST", "/api/dlq/replay", body={"route": "refused"})
        assert reply.status == 200
        assert reply.json() == {"replayed": 3}
        await d.wait_for(lambda: sink.delivered == 3, timeout=5, what="replayed deliveries")
        assert await d.services.store.dlq_count() == 0


async def test_dlq_replay_wants_exactly_one_selection(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        both = await call(d, "POST", "/api/dlq/replay", body={"all": True, "route": "ticks"})
        unknown_key = await call(d, "POST", "/api/dlq/replay", body={"everything": True})
    assert both.status == 400
    assert unknown_key.status == 400
    assert "everything" in unknown_key.json()["detail"]


async def test_reload_applies_a_valid_config(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl"), Components()) as d:
        path = d.daemon.config.path
        path.write_text(path.read_text() + refused(count=1))
        reply = await call(d, "POST", "/api/reload")
        routes = await call(d, "GET", "/api/routes")
    assert reply.status == 200
    assert reply.json() == {"applied": True, "problems": []}
    assert [r["name"] for r in routes.json()] == ["ticks", "refused"]


async def test_reload_refuses_an_invalid_config_and_says_why(run_route, tmp_path: Path) -> None:
    async with run_route(ticks(tmp_path / "out.jsonl")) as d:
        path = d.daemon.config.path
        path.write_text(path.read_text().replace('interval = "10ms"', 'interval = "soon"'))
        reply = await call(d, "POST", "/api/reload")
        assert list(d.daemon.routes) == ["ticks"]
    assert reply.status == 422
    problem = reply.json()
    assert problem["applied"] is False
    [line] = problem["problems"]
    assert "routes.ticks.source.interval" in line and "soon" in line
