"""The ``http_poll`` source in a running daemon, against a real loopback API."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from integrator import hookimpl
from integrator.components import Context, Sink
from integrator.config import ConnectionConfig, convert, parse_config
from integrator.errors import ConfigError
from integrator.http.client import HttpClient
from integrator.http.schedule import Schedule
from integrator.message import Message
from integrator.testing import RunningDaemon, make_registry, running_daemon
from tests.http.loopback import serve
from tests.http.oauth_server import OAuthServer

PER_PAGE = 3


class Catalog:
    """An API over a list of records, paginated every way the poller supports."""

    def __init__(self, count: int = 7) -> None:
        self.items = [{"id": i, "updated_at": i} for i in range(1, count + 1)]
        self.requests: list[web.Request] = []
        self.times: list[float] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.in_flight = 0
        self.peak = 0
        self.delay = 0.0
        self.newest_first = False
        self.url = ""
        self.link_base: str | None = None  # where Link headers point (default: here)

    def add(self, *ids: int) -> None:
        self.items.extend({"id": i, "updated_at": i} for i in ids)

    def chosen(self, request: web.Request) -> list[dict[str, int]]:
        """Records after ``since``/``since_id``/``cursor``, oldest first unless told otherwise."""
        after = next(
            (int(request.query[k]) for k in ("since", "since_id", "cursor") if k in request.query),
            0,
        )
        items = [item for item in self.items if item["updated_at"] > after]
        return sorted(items, key=lambda item: item["id"], reverse=self.newest_first)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.times.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.script:
            status, headers = self.script.pop(0)
            return web.Response(status=status, headers=headers, text="try later")
        kind = request.match_info["kind"]
        items = self.chosen(request)
        query = request.query
        if kind == "all":
            return web.json_response({"data": items, "count": len(items)})
        if kind == "link":
            page = int(query.get("page", "1"))
            chunk = items[(page - 1) * PER_PAGE : page * PER_PAGE]
            headers = {}
            if page * PER_PAGE < len(items):
                base = self.link_base or self.url
                headers["Link"] = f'<{base}/link?page={page + 1}>; rel="next"'
            return web.json_response(chunk, headers=headers)
        if kind == "cursor":
            chunk = items[:PER_PAGE]
            cursor = str(chunk[-1]["updated_at"]) if chunk else query.get("cursor")
            return web.json_response({"data": chunk, "meta": {"next": cursor}})
        if kind == "page":
            page, size = int(query["page"]), int(query.get("per_page", PER_PAGE))
            return web.json_response({"items": items[(page - 1) * size : page * size]})
        if kind == "offset":
            offset, limit = int(query["offset"]), int(query["limit"])
            return web.json_response({"items": items[offset : offset + limit]})
        raise web.HTTPNotFound()

    async def conditional(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        etag, modified = '"v1"', "Wed, 21 Oct 2015 07:28:00 GMT"
        if request.path == "/etag":
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304)
            return web.json_response({"data": self.items}, headers={"ETag": etag})
        if request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304)
        return web.json_response({"data": self.items}, headers={"Last-Modified": modified})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/etag", self.conditional)
        app.router.add_get("/modified", self.conditional)
        app.router.add_get("/{kind}", self.handle)
        return app

    def queries(self) -> list[dict[str, str]]:
        return [dict(request.query) for request in self.requests]


@pytest.fixture
async def catalog() -> AsyncIterator[Catalog]:
    api = Catalog()
    async with serve(api.app()) as url:
        api.url = url
        yield api


class Collector:
    """A ``collect`` sink plugin that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        messages = self.messages

        class CollectSink(Sink):
            async def deliver(self, message: Message) -> None:
                messages.append(message)

        self.sink = CollectSink

    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        register("collect", self.sink)

    def ids(self) -> list[str]:
        return [m.id for m in self.messages]


#: Port 0: tests run side by side, and the admin listener's default port may be taken.
ADMIN = '[admin]\nlisten = "127.0.0.1:0"\n'


def poll_route(source: str) -> str:
    return f"""
    {ADMIN}
    [routes.poll]
    sinks = [{{ type = "collect" }}]
    dedupe_window = "1h"

    [routes.poll.source]
    type = "http_poll"
    {source}
    """


async def collected(daemon: RunningDaemon, collector: Collector, count: int) -> None:
    await daemon.wait_for(lambda: len(collector.messages) >= count, what=f"{count} messages")


# -- records ------------------------------------------------------------------------------------


async def test_each_record_becomes_a_message_whose_id_is_the_record_id(
    run_route: Any, catalog: Catalog
) -> None:
    sink = Collector()
    source = f'url = "{catalog.url}/all"\ninterval = "1h"\nrecords = "data"\nid_field = "id"'
    async with run_route(poll_route(source), sink) as d:
        await collected(d, sink, 7)
    assert sink.ids() == [str(i) for i in range(1, 8)]
    assert sink.messages[0].body == {"id": 1, "updated_at": 1}
    assert sink.messages[0].attributes == {"url": f"{catalog.url}/all", "status": 200}


async def test_without_records_the_whole_body_is_one_message(
    run_route: Any, catalog: Catalog
) -> None:
    sink = Collector()
    async with run_route(poll_route(f'url = "{catalog.url}/all"\ninterval = "1h"'), sink) as d:
        await collected(d, sink, 1)
    [message] = sink.messages
    assert message.body["count"] == 7


async def test_re_polled_records_are_deduplicated_by_their_id(
    run_route: Any, catalog: Catalog
) -> None:
    sink = Collector()
    source = f'url = "{catalog.url}/all"\ninterval = "20ms"\nrecords = "data"\nid_field = "id"'
    async with run_route(poll_route(source), sink) as d:
        stats = d.services.route_stats("poll")
        await d.wait_for(lambda: stats.duplicates >= 14, what="two polls more")
    assert sorted(sink.ids(), key=int) == [str(i) for i in range(1, 8)]


# -- pagination ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "options", "expected_queries"),
    [
        (
            "/link",  # a top-level array: "@" is the body itself
            'records = "@"\npagination = { type = "link" }',
            [{}, {"page": "2"}, {"page": "3"}],
        ),
        (
            "/cursor",
            'records = "data"\npagination = { type = "cursor", cursor_field = "meta.next" }',
            [{}, {"cursor": "3"}, {"cursor": "6"}, {"cursor": "7"}],
        ),
        (
            "/page",
            'records = "items"\npagination = { type = "page" }',
            [{"page": "1"}, {"page": "2"}, {"page": "3"}, {"page": "4"}],
        ),
        (
            "/page",
            'records = "items"\n'
            'pagination = { type = "page", size_param = "per_page", size = 3, start = 1 }',
            [{"page": str(n), "per_page": "3"} for n in (1, 2, 3)],
        ),
        (
            "/offset",
            'records = "items"\npagination = { type = "offset", limit = 3 }',
            [{"offset": str(n), "limit": "3"} for n in (0, 3, 6)],
        ),
    ],
    ids=["link", "cursor", "page", "page-with-size", "offset"],
)
async def test_every_page_is_fetched_in_order(
    run_route: Any,
    catalog: Catalog,
    path: str,
    options: str,
    expected_queries: list[dict[str, str]],
) -> None:
    sink = Collector()
    source = f'url = "{catalog.url}{path}"\ninterval = "1h"\nid_field = "id"\n{options}'
    async with run_route(poll_route(source), sink) as d:
        await collected(d, sink, 7)
        await d.wait_for(lambda: len(catalog.requests) >= len(expected_queries), what="pages")
    assert sink.ids() == [str(i) for i in range(1, 8)]
    assert catalog.queries() == expected_queries


async def test_a_poll_stops_at_max_pages_and_the_next_poll_goes_on_from_there(
    catalog: Catalog, tmp_path: Path
) -> None:
    source = (
        f'url = "{catalog.url}/page"\ninterval = "1h"\nrecords = "items"\nid_field = "id"\n'
        'pagination = { type = "page", size_param = "per_page", size = 3 }\nmax_pages = 2'
    )
    first, second = Collector(), Collector()
    async with running_daemon(poll_route(source), tmp_path / "state", first) as d:
        await collected(d, first, 6)
    assert [query["page"] for query in catalog.queries()] == ["1", "2"]
    async with running_daemon(poll_route(source), tmp_path / "state", second) as d:
        await collected(d, second, 1)
    assert [query["page"] for query in catalog.queries()] == ["1", "2", "3"]
    assert second.ids() == ["7"]


async def test_a_next_link_to_another_origin_is_not_followed(
    run_route: Any, catalog: Catalog
) -> None:
    other = Catalog()
    async with serve(other.app()) as other_url:
        catalog.link_base = other_url
        sink = Collector()
        source = (
            f'url = "{catalog.url}/link"\ninterval = "1h"\nrecords = "@"\n'
            'pagination = { type = "link" }'
        )
        async with run_route(poll_route(source), sink) as d:
            await collected(d, sink, 3)
            runtime = d.daemon.routes["poll"]
            await d.wait_for(lambda: runtime.source.last_error is not None, what="an error")
        assert "another origin" in runtime.source.last_error
    assert other.requests == []


# -- incremental sync and restarts --------------------------------------------------------------


async def test_since_checkpoint_resumes_after_a_restart_without_gaps_or_repeats(
    catalog: Catalog, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    source = (
        f'url = "{catalog.url}/all"\ninterval = "1h"\nrecords = "data"\nid_field = "id"\n'
        'incremental = { type = "since", field = "updated_at", param = "since" }'
    )
    first = Collector()
    async with running_daemon(poll_route(source), state, first) as d:
        await collected(d, first, 7)
    catalog.add(8, 9)
    second = Collector()
    async with running_daemon(poll_route(source), state, second) as d:
        await collected(d, second, 2)
    assert catalog.queries() == [{}, {"since": "7"}]
    assert second.ids() == ["8", "9"]


async def test_a_restart_in_the_middle_of_a_poll_resumes_at_the_next_page(
    catalog: Catalog, tmp_path: Path
) -> None:
    catalog.newest_first = True  # "since" may only advance once every page is in
    state = tmp_path / "state"
    source = (
        f'url = "{catalog.url}/page"\ninterval = "1h"\nrecords = "items"\nid_field = "id"\n'
        'pagination = { type = "page", size_param = "per_page", size = 3 }\nmax_pages = 1\n'
        'incremental = { type = "since", field = "updated_at", param = "since" }'
    )
    seen: list[str] = []
    for expected in (["7", "6", "5"], ["4", "3", "2"], ["1"]):
        sink = Collector()
        async with running_daemon(poll_route(source), state, sink) as d:
            await collected(d, sink, len(expected))
        assert sink.ids() == expected
        seen += sink.ids()
    catalog.add(8)
    sink = Collector()
    async with running_daemon(poll_route(source), state, sink) as d:
        await collected(d, sink, 1)
    assert sink.ids() == ["8"]
    assert catalog.queries()[-1] == {"page": "1", "per_page": "3", "since": "7"}
    assert [q["page"] for q in catalog.queries()[:3]] == ["1", "2", "3"]


async def test_a_cursor_checkpoint_continues_from_the_last_cursor(
    catalog: Catalog, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    source = (
        f'url = "{catalog.url}/cursor"\ninterval = "1h"\nrecords = "data"\nid_field = "id"\n'
        'pagination = { type = "cursor", cursor_field = "meta.next" }\n'
        'incremental = { type = "cursor", field = "meta.next", param = "cursor" }'
    )
    first = Collector()
    async with running_daemon(poll_route(source), state, first) as d:
        await collected(d, first, 7)
    catalog.add(8)
    second = Collector()
    async with running_daemon(poll_route(source), state, second) as d:
        await collected(d, second, 1)
    assert second.ids() == ["8"]
    assert catalog.queries()[4] == {"cursor": "7"}


async def test_last_id_sends_the_greatest_id_seen(catalog: Catalog, tmp_path: Path) -> None:
    state = tmp_path / "state"
    source = (
        f'url = "{catalog.url}/all"\ninterval = "1h"\nrecords = "data"\nid_field = "id"\n'
        'incremental = { type = "last_id", field = "id", param = "since_id" }'
    )
    async with running_daemon(poll_route(source), state, sink := Collector()) as d:
        await collected(d, sink, 7)
    async with running_daemon(poll_route(source), state, Collector()) as d:
        await d.wait_for(lambda: len(catalog.requests) == 2, what="the second poll")
    assert catalog.queries()[1] == {"since_id": "7"}


# -- conditional requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "header"), [("/etag", "If-None-Match"), ("/modified", "If-Modified-Since")]
)
async def test_an_unchanged_resource_answers_304_and_brings_nothing(
    run_route: Any, catalog: Catalog, path: str, header: str
) -> None:
    sink = Collector()
    source = f'url = "{catalog.url}{path}"\ninterval = "20ms"\nrecords = "data"'
    async with run_route(poll_route(source), sink) as d:
        await d.wait_for(lambda: len(catalog.requests) >= 3, what="three polls")
        await collected(d, sink, 7)
    assert header not in catalog.requests[0].headers
    assert all(header in r.headers for r in catalog.requests[1:])
    assert len(sink.messages) == 7  # no id_field: only the 304s keep them from repeating


# -- failures and scheduling --------------------------------------------------------------------


async def test_a_failed_poll_is_recorded_and_the_next_one_runs_on_schedule(
    run_route: Any, catalog: Catalog
) -> None:
    catalog.script = [(500, {})]
    sink = Collector()
    source = f'url = "{catalog.url}/all"\ninterval = "20ms"\nrecords = "data"\nid_field = "id"'
    async with run_route(poll_route(source), sink) as d:
        await collected(d, sink, 7)
        health = d.services.health.components["poll/source"]
        assert "HTTP 500 Internal Server Error" in health.last_error
        assert health.state == "running"
        assert d.daemon.routes["poll"].source.last_error is None
        assert d.services.shared["ops_stats"].polls["poll"].count >= 2  # timed, both


async def test_retry_after_on_a_poll_delays_the_next_one(run_route: Any, catalog: Catalog) -> None:
    catalog.script = [(429, {"Retry-After": "1"})]
    sink = Collector()
    source = f'url = "{catalog.url}/all"\ninterval = "20ms"\nrecords = "data"'
    async with run_route(poll_route(source), sink) as d:
        await collected(d, sink, 7)
    refused_at, next_at = catalog.times[:2]
    assert next_at - refused_at >= 0.95  # the interval alone would be 20ms


async def test_a_slow_poll_delays_the_next_and_never_overlaps_it(
    run_route: Any, catalog: Catalog
) -> None:
    catalog.delay = 0.1
    source = f'url = "{catalog.url}/all"\ninterval = "10ms"'
    async with run_route(poll_route(source), Collector()) as d:
        await d.wait_for(lambda: len(catalog.requests) >= 3, what="three polls")
    assert catalog.peak == 1


async def test_no_poll_is_made_while_the_store_refuses_intake(catalog: Catalog) -> None:
    from integrator.builtin.http_poll import HttpPollOptions, HttpPollSource

    class FullStore:
        accepting = False

    options = convert({"url": f"{catalog.url}/all", "interval": "1s"}, HttpPollOptions)
    source = HttpPollSource(options, Context(route="poll"))
    client = HttpClient(None, ConnectionConfig())
    try:
        await source.cycle(FullStore(), client)  # type: ignore[arg-type]
    finally:
        await client.close()
    assert catalog.requests == []
    assert source.polls == 0


async def test_oauth2_tokens_are_fetched_and_refreshed_once_after_a_401(
    run_route: Any, oauth_server: OAuthServer
) -> None:
    oauth_server.add_client("poller", "s3cret-client")
    config = f"""
    [connections.idp]
    url = "{oauth_server.url}"
    auth = {{ type = "oauth2", token_url = "{oauth_server.token_url}", client_id = "poller", client_secret = "s3cret-client" }}
    """
    sink = Collector()
    source = 'connection = "idp"\npath = "/resource"\ninterval = "30ms"'
    async with run_route(config + poll_route(source), sink) as d:
        await collected(d, sink, 1)
        oauth_server.revoke_access_tokens()
        polls = oauth_server.resource_requests
        await d.wait_for(lambda: oauth_server.resource_requests >= polls + 3, what="more polls")
        saved = await d.services.store.get_state(f"auth:oauth2:{oauth_server.token_url}:poller")
    assert oauth_server.token_requests == 2
    assert sink.messages[-1].body["client_id"] == "poller"
    assert saved["access_token"] in oauth_server.by_access


# -- configuration and the schedule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('url = "http://x.test"', "exactly one of 'interval' and 'cron'"),
        ('url = "http://x.test"\ninterval = "1m"\ncron = "* * * * *"', "exactly one"),
        ('url = "http://x.test"\ncron = "every day"', "not a valid cron expression"),
        ('url = "http://x.test"\ninterval = "1m"\ntimezone = "Mars/Olympus"', "unknown 'timezone'"),
        ('interval = "1m"', "needs a 'url', or a 'connection'"),
        ('url = "http://x.test"\ninterval = "1m"\npagination = { type = "page" }', "'records'"),
        ('url = "http://x.test"\ninterval = "1m"\npagination = { type = "pages" }', "type"),
        ('url = "http://x.test"\ninterval = "1m"\nrecords = "data["', "invalid expression"),
        ('url = "http://x.test"\ninterval = "1m"\nmax_pages = 0', "max_pages"),
    ],
)
def test_invalid_options_are_config_errors(source: str, message: str, tmp_path: Path) -> None:
    _, registry = make_registry(Collector())
    with pytest.raises(ConfigError, match=message):
        parse_config(poll_route(source), tmp_path / "integrator.toml", registry)


def test_an_interval_schedule_counts_from_the_start_of_the_last_poll() -> None:
    schedule = Schedule(interval=10.0)
    assert schedule.first_delay(now=0.0) == 0.0
    assert schedule.delay_after(started=100.0, finished=103.0, now=0.0) == 7.0
    assert schedule.delay_after(started=100.0, finished=125.0, now=0.0) == 0.0  # slow: no wait


def test_jitter_adds_a_random_wait_up_to_its_bound() -> None:
    schedule = Schedule(interval=10.0, jitter=2.0, rng=random.Random(7))
    delays = [schedule.delay_after(started=0.0, finished=0.0, now=0.0) for _ in range(200)]
    assert all(10.0 <= delay <= 12.0 for delay in delays)
    assert max(delays) - min(delays) > 1.0


def test_a_cron_schedule_waits_until_the_next_matching_time() -> None:
    now = datetime(2026, 3, 1, 10, 7, 30, tzinfo=UTC).timestamp()
    schedule = Schedule(cron="*/15 * * * *")
    assert schedule.first_delay(now) == 7.5 * 60  # 10:15:00
    assert schedule.delay_after(started=0.0, finished=0.0, now=now) == 7.5 * 60


def test_a_cron_schedule_follows_its_time_zone() -> None:
    now = datetime(2026, 7, 1, 6, 30, tzinfo=UTC).timestamp()  # 08:30 in Paris (summer)
    schedule = Schedule(cron="0 9 * * *", timezone="Europe/Paris")
    assert schedule.first_delay(now) == 30 * 60
