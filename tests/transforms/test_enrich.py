"""enrich: look data up over HTTP (a real loopback server) or in a table, and add it."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from integrator.components import Context
from integrator.config import ConnectionConfig
from integrator.errors import ConfigError, DeliveryError, Reject
from integrator.message import Message
from integrator.transforms.enrich import EnrichMiddleware, freshness
from tests.http.loopback import serve

ETAG = '"v1"'


@dataclass
class Remote:
    """A lookup API whose first path segment says how it answers."""

    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    seen: list[dict[str, str]] = field(default_factory=list)
    outages: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.seen.append(dict(request.headers))
        kind, ident = request.match_info["kind"], request.match_info["id"]
        found = {"id": ident, "name": f"customer {ident}"}
        if kind == "plain":
            return web.json_response(found)
        if kind in ("no-store", "max-age=0", "no-cache"):
            return web.json_response(found, headers={"Cache-Control": kind})
        if kind == "etag":
            headers = {"ETag": ETAG, "Cache-Control": "no-cache"}
            if request.headers.get("If-None-Match") == ETAG:
                return web.Response(status=304, headers=headers)
            return web.json_response(found, headers=headers)
        if kind == "missing":
            return web.json_response({"error": "no such customer"}, status=404)
        if kind == "busy":
            return web.Response(status=503, headers={"Retry-After": "7"}, text="maintenance")
        if kind == "forbidden":
            return web.Response(status=403, text="no access to customers")
        if kind == "text":
            return web.Response(text=f"hello {ident}")
        if kind == "broken":
            return web.Response(body=b"<html>oops</html>", content_type="application/json")
        if kind == "flaky" and self.outages > 0:
            self.outages -= 1
            return web.Response(status=503)
        return web.json_response(found)


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    api = Remote()
    app = web.Application()
    app.router.add_get("/{kind}/{id}", api.handle)
    async with serve(app) as base:
        api.base = base
        yield api


def context(remote: Remote) -> Context:
    connection = ConnectionConfig(url=remote.base, headers={"X-Api-Key": "k-123"})
    return Context(route="orders", services={"connections": {"crm": connection}})


@pytest.fixture
async def lookup(build, remote: Remote) -> AsyncIterator[Any]:
    """Build an opened http enrich on the ``crm`` connection; closed at the end."""
    opened: list[EnrichMiddleware] = []

    async def make(kind: str, **raw: Any) -> EnrichMiddleware:
        raw = {"target": "body.customer", **raw}
        middleware: EnrichMiddleware = build(
            EnrichMiddleware,
            context(remote),
            lookup="http",
            connection="crm",
            path=f"/{kind}/${{body.id}}",
            **raw,
        )
        await middleware.open()
        opened.append(middleware)
        return middleware

    yield make
    for middleware in opened:
        await middleware.close()


def customer(ident: str) -> Message:
    return Message(body={"id": ident})


async def test_the_answer_is_written_at_the_target(lookup, run, remote: Remote) -> None:
    enrich = await lookup("plain")
    [out] = await run(enrich, message=customer("c 1"))
    assert out.body == {"id": "c 1", "customer": {"id": "c 1", "name": "customer c 1"}}
    assert remote.hits == {"/plain/c 1": 1}, "the hole is one path segment"
    assert remote.seen[0]["X-Api-Key"] == "k-123", "the connection's headers are sent"
    assert remote.seen[0]["Accept"] == "application/json"


async def test_an_answer_is_reused_within_the_ttl(lookup, run, remote: Remote) -> None:
    enrich = await lookup("plain")
    [first] = await run(enrich, message=customer("c1"))
    [second] = await run(enrich, message=customer("c1"))
    await run(enrich, message=customer("c2"))
    assert remote.hits == {"/plain/c1": 1, "/plain/c2": 1}
    assert first.body == second.body
    assert (enrich.cache.hits, enrich.cache.misses) == (1, 2)


async def test_a_reused_answer_is_a_copy(lookup, run) -> None:
    enrich = await lookup("plain")
    [first] = await run(enrich, message=customer("c1"))
    first.body["customer"]["name"] = "changed by a later layer"
    [second] = await run(enrich, message=customer("c1"))
    assert second.body["customer"]["name"] == "customer c1"


async def test_after_the_ttl_the_remote_is_asked_again(lookup, run, remote: Remote) -> None:
    enrich = await lookup("plain", cache={"ttl": "100ms"})
    await run(enrich, message=customer("c1"))
    await run(enrich, message=customer("c1"))
    await anyio.sleep(0.15)
    await run(enrich, message=customer("c1"))
    assert remote.hits["/plain/c1"] == 2


async def test_the_least_recently_used_answer_is_evicted(lookup, run, remote: Remote) -> None:
    enrich = await lookup("plain", cache={"size": 2})
    for ident in ("a", "b", "a", "c", "a", "b"):
        await run(enrich, message=customer(ident))
    assert remote.hits == {"/plain/a": 1, "/plain/b": 2, "/plain/c": 1}


@pytest.mark.parametrize("directive", ["no-store", "max-age=0"])
async def test_cache_control_can_forbid_reuse(lookup, run, remote: Remote, directive: str) -> None:
    enrich = await lookup(directive)
    await run(enrich, message=customer("c1"))
    [out] = await run(enrich, message=customer("c1"))
    assert out.body["customer"]["id"] == "c1"
    assert remote.hits[f"/{directive}/c1"] == 2


async def test_a_stale_answer_with_an_etag_is_revalidated(lookup, run, remote: Remote) -> None:
    enrich = await lookup("etag")
    [first] = await run(enrich, message=customer("c1"))
    [second] = await run(enrich, message=customer("c1"))
    assert remote.hits["/etag/c1"] == 2
    assert "If-None-Match" not in remote.seen[0]
    assert remote.seen[1]["If-None-Match"] == ETAG
    assert (
        second.body == first.body == {"id": "c1", "customer": {"id": "c1", "name": "customer c1"}}
    )
    assert enrich.cache.revalidated == 1


@pytest.mark.parametrize(
    ("on_missing", "expected"),
    [("keep", {"id": "c9"}), ("null", {"id": "c9", "customer": None})],
)
async def test_a_404_keeps_the_message_or_writes_null(
    lookup, run, on_missing: str, expected: dict[str, Any]
) -> None:
    enrich = await lookup("missing", on_missing=on_missing)
    [out] = await run(enrich, message=customer("c9"))
    assert out.body == expected


async def test_a_404_is_reused_like_an_answer(lookup, run, remote: Remote) -> None:
    enrich = await lookup("missing", on_missing="null")
    await run(enrich, message=customer("c9"))
    [out] = await run(enrich, message=customer("c9"))
    assert out.body == {"id": "c9", "customer": None}
    assert remote.hits["/missing/c9"] == 1


async def test_a_404_can_reject_the_message(lookup, run) -> None:
    enrich = await lookup("missing", on_missing="reject")
    with pytest.raises(
        Reject, match=r"^enrich: GET http://127\.0\.0\.1:\d+/missing/c9 found nothing"
    ):
        await run(enrich, message=customer("c9"))


async def test_a_503_is_retried_when_the_remote_says(lookup, run) -> None:
    enrich = await lookup("busy")
    with pytest.raises(DeliveryError) as caught:
        await run(enrich, message=customer("c1"))
    error = caught.value
    assert (error.retriable, error.retry_after) == (True, 7.0)
    assert "HTTP 503 Service Unavailable: maintenance" in error.reason


async def test_another_4xx_rejects_the_message(lookup, run) -> None:
    enrich = await lookup("forbidden")
    with pytest.raises(Reject, match=r"HTTP 403 Forbidden: no access to customers$"):
        await run(enrich, message=customer("c1"))


async def test_no_answer_at_all_is_retried(build, run) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    enrich = build(
        EnrichMiddleware, lookup="http", url=f"http://127.0.0.1:{port}/x", target="body.x"
    )
    await enrich.open()
    try:
        with pytest.raises(DeliveryError) as caught:
            await run(enrich, message=customer("c1"))
    finally:
        await enrich.close()
    assert caught.value.retriable is True


async def test_a_text_answer_is_written_as_a_string(lookup, run) -> None:
    [out] = await run(await lookup("text", target="body.greeting"), message=customer("c1"))
    assert out.body["greeting"] == "hello c1"


async def test_an_answer_that_is_not_json_rejects_the_message(lookup, run) -> None:
    with pytest.raises(Reject, match=r"the answer is not JSON"):
        await run(await lookup("broken"), message=customer("c1"))


def test_an_unknown_connection_is_refused_when_built(build, remote: Remote) -> None:
    with pytest.raises(ConfigError, match=r"unknown connection 'erp'; known connections: crm"):
        build(EnrichMiddleware, context(remote), lookup="http", connection="erp", target="body.x")


async def test_a_lookup_in_a_daemon_is_retried_through_an_outage(
    run_route, remote: Remote, tmp_path: Path
) -> None:
    remote.outages = 1
    out = tmp_path / "out.jsonl"
    toml = f"""
    [connections.crm]
    url = "{remote.base}"

    [routes.orders]
    retry = {{ initial = "10ms", max = "10ms" }}
    source = {{ type = "timer", interval = "1h", count = 1, body = {{ id = "c1" }} }}
    middleware = [{{ type = "enrich", lookup = "http", connection = "crm", path = "/flaky/${{body.id}}", target = "body.customer" }}]
    sinks = [{{ type = "file", path = "{out}" }}]
    """
    async with run_route(toml) as daemon:
        await daemon.wait_delivered("orders", 1)
    assert remote.hits["/flaky/c1"] == 2
    [line] = out.read_text().splitlines()
    assert json.loads(line)["body"]["customer"] == {"id": "c1", "name": "customer c1"}


# -- table ---------------------------------------------------------------------------------------

TABLE = {"7": {"warehouse": "north"}, "true": "yes", "a": {"warehouse": "south"}}


@pytest.mark.parametrize(
    ("key", "expected"),
    [(7, {"warehouse": "north"}), ("a", {"warehouse": "south"}), (True, "yes")],
)
async def test_a_table_lookup_writes_the_entry(build, run, key: Any, expected: Any) -> None:
    enrich = build(
        EnrichMiddleware, lookup="table", table=TABLE, key="body.sku", target="body.stock"
    )
    [out] = await run(enrich, message=Message(body={"sku": key}))
    assert out.body["stock"] == expected


async def test_a_table_entry_is_not_shared_between_messages(build, run) -> None:
    enrich = build(
        EnrichMiddleware, lookup="table", table=TABLE, key="body.sku", target="body.stock"
    )
    [out] = await run(enrich, message=Message(body={"sku": "a"}))
    out.body["stock"]["warehouse"] = "changed"
    assert TABLE["a"] == {"warehouse": "south"}


@pytest.mark.parametrize("sku", ["zz", None])
async def test_a_key_not_in_the_table_follows_on_missing(build, run, sku: Any) -> None:
    raw = {"lookup": "table", "table": TABLE, "key": "body.sku", "target": "body.stock"}
    keep = build(EnrichMiddleware, **raw)
    assert [m.body for m in await run(keep, message=Message(body={"sku": sku}))] == [{"sku": sku}]
    reject = build(EnrichMiddleware, **raw, on_missing="reject")
    with pytest.raises(Reject, match=r"^enrich: the table lookup of .* found nothing$"):
        await run(reject, message=Message(body={"sku": sku}))


# -- options and freshness -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"lookup": "http", "target": "body.x"}, r"needs a 'url', or a 'connection'"),
        (
            {"lookup": "http", "url": "http://a.test/x", "path": "/x", "target": "body.x"},
            r"either 'url' or 'path'",
        ),
        (
            {"lookup": "http", "url": "http://a.test", "key": "body.id", "target": "body.x"},
            r"^key: only for lookup = 'table'",
        ),
        ({"lookup": "http", "url": "http://a.test/${body.", "target": "body.x"}, r"^url: template"),
        (
            {"lookup": "table", "target": "body.x"},
            r"table: give the table.*key: give the expression",
        ),
        (
            {"lookup": "table", "table": {}, "key": "body.", "target": "body.x"},
            r"^key: invalid expression",
        ),
        ({"lookup": "table", "table": {}, "key": "id", "target": "nobody.x"}, r"^target: path"),
        (
            {
                "lookup": "table",
                "table": {},
                "key": "id",
                "target": "body.x",
                "url": "http://a.test",
            },
            r"^url: only for lookup = 'http'",
        ),
    ],
)
def test_bad_options_are_refused(build, raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build(EnrichMiddleware, **raw)


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ({}, 300.0),
        ({"Cache-Control": "max-age=60"}, 60.0),
        ({"Cache-Control": "public, max-age=600"}, 300.0),
        ({"Cache-Control": 'private, s-maxage=30, max-age="60"'}, 30.0),
        ({"Cache-Control": "max-age=60", "Age": "45"}, 15.0),
        ({"Cache-Control": "max-age=soon"}, 0.0),
        ({"Cache-Control": "no-cache"}, 0.0),
        ({"Cache-Control": "max-age=60, no-store"}, None),
        (
            {"Date": "Sun, 06 Nov 1994 08:49:37 GMT", "Expires": "Sun, 06 Nov 1994 08:50:37 GMT"},
            60.0,
        ),
        ({"Expires": "0"}, 0.0),
    ],
)
def test_freshness_follows_the_caching_headers(headers: dict[str, str], lifetime: float) -> None:
    assert freshness(headers, 300.0, now=1_700_000_000.0) == lifetime
