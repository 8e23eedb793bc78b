"""The ``http`` sink in a running daemon, against real loopback receivers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import standardwebhooks
from aiohttp import web

from integrator import hookimpl
from integrator.config import parse_config
from integrator.errors import ConfigError
from integrator.http.auth import AuthProvider, set_header
from integrator.testing import RunningDaemon, make_registry
from tests.http.loopback import serve
from tests.http.oauth_server import OAuthServer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + "b2xkIHNlY3JldCBmb3Igcm90YXRpb24="
FAST_RETRY = 'retry = { initial = "10ms", max = "20ms", max_attempts = 5 }'


@dataclass
class Received:
    method: str
    path: str
    raw_path: str
    headers: Mapping[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver or API that answers from a script, then 200."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    answer_body: str = ""
    accept_token: str | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(
            Received(
                request.method,
                request.path,
                request.raw_path,
                request.headers,
                body,
                time.monotonic(),
            )
        )
        expected = f"Bearer {self.accept_token}"
        if self.accept_token is not None and request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers, text=self.answer_body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    async with serve(recv.app()) as url:
        recv.url = url
        yield recv


def route(sink: str, body: Any = None, *, extra: str = "") -> str:
    """One route: a timer emitting one message with ``body``, delivered to ``sink``."""
    body_toml = toml_value(body if body is not None else {"id": "c-1", "email": "a@b.test"})
    return f"""
    [admin]
    listen = "127.0.0.1:0"  # tests run side by side: never the default port
    {extra}
    [routes.out]
    source = {{ type = "timer", count = 1, body = {body_toml} }}
    sinks = [{sink}]
    {FAST_RETRY}
    """


def toml_value(value: Any) -> str:
    """A TOML inline value (tables inline, strings JSON-quoted, which TOML reads alike)."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


async def dead_letters(daemon: RunningDaemon, count: int = 1) -> list[Any]:
    stats = daemon.services.route_stats("out").sink("http")
    await daemon.wait_for(lambda: stats.dead >= count, what=f"{count} dead letter(s)")
    return list(await daemon.services.store.dlq_list(route="out"))


# -- the request ------------------------------------------------------------------------------


async def test_posts_the_body_as_json_with_the_message_id_as_idempotency_key(
    run_route: Any, receiver: Receiver
) -> None:
    async with run_route(route(f'{{ type = "http", url = "{receiver.url}/hook" }}')) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    assert (request.method, request.path) == ("POST", "/hook")
    assert json.loads(request.body) == {"id": "c-1", "email": "a@b.test"}
    assert request.headers["Content-Type"] == "application/json"
    assert len(request.headers["Idempotency-Key"]) == 36  # the message id, a UUID


async def test_path_headers_and_params_are_templated_from_the_message(
    run_route: Any, receiver: Receiver
) -> None:
    sink = (
        '{ type = "http", connection = "crm", method = "PUT", path = "/customers/${body.id}", '
        'headers = { X-Email = "${body.email}" }, params = { source = "integrator" } }'
    )
    connection = f'[connections.crm]\nurl = "{receiver.url}/v2"\nheaders = {{ X-Tenant = "t1" }}'
    async with run_route(route(sink, {"id": "a/b c", "email": "x@y.test"}, extra=connection)) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    assert request.method == "PUT"
    assert request.raw_path == "/v2/customers/a%2Fb%20c?source=integrator"
    assert request.headers["X-Email"] == "x@y.test"
    assert request.headers["X-Tenant"] == "t1"


async def test_a_path_without_holes_goes_to_the_connection_url_every_time(
    run_route: Any, receiver: Receiver
) -> None:
    sink = '{ type = "http", connection = "crm", path = "/static/items" }'
    connection = f'[connections.crm]\nurl = "{receiver.url}/v2"'
    async with run_route(route(sink, extra=connection)) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    assert request.path == "/v2/static/items"


async def test_form_body_encodes_a_flat_table(run_route: Any, receiver: Receiver) -> None:
    sink = f'{{ type = "http", url = "{receiver.url}", body = "form" }}'
    async with run_route(route(sink, {"name": "Ada L", "tags": ["a", "b"], "vip": True})) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.body == b"name=Ada+L&tags=a&tags=b&vip=true"


async def test_raw_body_is_sent_as_it_is(run_route: Any, receiver: Receiver) -> None:
    sink = f'{{ type = "http", url = "{receiver.url}", body = "raw", idempotency_header = "" }}'
    async with run_route(route(sink, "plain text, not JSON")) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    assert request.body == b"plain text, not JSON"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert "Idempotency-Key" not in request.headers


# -- outbound webhook signatures --------------------------------------------------------------


async def test_signed_webhooks_verify_with_the_standardwebhooks_library(
    run_route: Any, receiver: Receiver
) -> None:
    sink = f'{{ type = "http", url = "{receiver.url}", sign = {{ secret = "{SECRET}" }} }}'
    async with run_route(route(sink)) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    payload = standardwebhooks.Webhook(SECRET).verify(request.body, dict(request.headers))
    assert payload == {"id": "c-1", "email": "a@b.test"}
    assert request.headers["webhook-id"] == request.headers["Idempotency-Key"]


async def test_while_rotating_each_secret_signs_so_either_receiver_key_verifies(
    run_route: Any, receiver: Receiver
) -> None:
    secrets = f'["{SECRET}", "{OLD_SECRET}"]'
    sink = f'{{ type = "http", url = "{receiver.url}", sign = {{ secret = {secrets} }} }}'
    async with run_route(route(sink)) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    for key in (SECRET, OLD_SECRET):
        standardwebhooks.Webhook(key).verify(request.body, dict(request.headers))


async def test_a_tampered_signed_body_fails_the_receivers_check(
    run_route: Any, receiver: Receiver
) -> None:
    sink = f'{{ type = "http", url = "{receiver.url}", sign = {{ secret = "{SECRET}" }} }}'
    async with run_route(route(sink)) as d:
        await d.wait_delivered("out", 1)
    [request] = receiver.received
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(request.body + b" ", dict(request.headers))


# -- answers ----------------------------------------------------------------------------------


async def test_429_with_retry_after_is_retried_no_sooner_than_asked(
    run_route: Any, receiver: Receiver
) -> None:
    receiver.script = [(429, {"Retry-After": "1"})]
    async with run_route(route(f'{{ type = "http", url = "{receiver.url}" }}')) as d:
        await d.wait_delivered("out", 1)
    first, second = receiver.received
    assert second.at - first.at >= 0.95  # the policy alone would wait at most 20ms


async def test_5xx_answers_are_retried_until_delivered(run_route: Any, receiver: Receiver) -> None:
    receiver.script = [(503, {}), (500, {})]
    async with run_route(route(f'{{ type = "http", url = "{receiver.url}" }}')) as d:
        await d.wait_delivered("out", 1)
        assert await d.services.store.dlq_count() == 0
    assert len(receiver.received) == 3
    assert len({r.headers["Idempotency-Key"] for r in receiver.received}) == 1


async def test_a_4xx_answer_goes_to_the_dlq_at_once_with_the_reason(
    run_route: Any, receiver: Receiver
) -> None:
    receiver.script = [(422, {})]
    receiver.answer_body = '{"error": "email is invalid"}'
    async with run_route(route(f'{{ type = "http", url = "{receiver.url}" }}')) as d:
        [entry] = await dead_letters(d)
    assert entry.attempts == 1
    assert "HTTP 422 Unprocessable" in entry.last_error
    assert "email is invalid" in entry.last_error
    assert len(receiver.received) == 1


async def test_success_statuses_can_be_chosen(run_route: Any, receiver: Receiver) -> None:
    receiver.script = [(409, {})]  # "already exists": done, for an idempotent create
    sink = f'{{ type = "http", url = "{receiver.url}", success = [200, 201, 409] }}'
    async with run_route(route(sink)) as d:
        await d.wait_delivered("out", 1)
    assert len(receiver.received) == 1


async def test_an_unreachable_receiver_is_retried_before_dead_lettering(run_route: Any) -> None:
    async with run_route(route('{ type = "http", url = "http://127.0.0.1:1/hook" }')) as d:
        [entry] = await dead_letters(d)
    assert entry.attempts == 5
    assert "POST http://127.0.0.1:1/hook" in entry.last_error


# -- credentials ------------------------------------------------------------------------------


class RotatingToken(AuthProvider):
    """A bearer token that is stale until a 401 asks for a new one."""

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        pass

    refreshes = 0

    def __init__(self, options: Any, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.token = "stale"

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        set_header(headers, "Authorization", f"Bearer {self.token}")

    async def on_unauthorized(self, headers: Mapping[str, str] | None = None) -> bool:
        type(self).refreshes += 1
        self.token = "fresh"
        return True


class RotatingTokenPlugin:
    @hookimpl
    def integrator_auth(self, register: Any) -> None:
        register("rotating", RotatingToken)


async def test_a_401_refreshes_the_credentials_once_and_retries_at_once(
    run_route: Any, receiver: Receiver
) -> None:
    RotatingToken.refreshes = 0
    receiver.accept_token = "fresh"
    connection = f'[connections.api]\nurl = "{receiver.url}"\nauth = {{ type = "rotating" }}'
    sink = '{ type = "http", connection = "api", path = "/events" }'
    async with run_route(route(sink, extra=connection), RotatingTokenPlugin()) as d:
        await d.wait_delivered("out", 1)
        assert d.services.route_stats("out").sink("http").failed == 0
    assert RotatingToken.refreshes == 1
    assert [r.headers["Authorization"] for r in receiver.received] == [
        "Bearer stale",
        "Bearer fresh",
    ]


async def test_refused_client_credentials_are_a_clear_error_not_a_retry_storm(
    run_route: Any, receiver: Receiver, oauth_server: OAuthServer
) -> None:
    oauth_server.add_client("sender", "the-right-secret")
    connection = (
        f'[connections.api]\nurl = "{receiver.url}"\n'
        f'auth = {{ type = "oauth2", token_url = "{oauth_server.token_url}", '
        'client_id = "sender", client_secret = "a-wrong-secret" }'
    )
    sink = '{ type = "http", connection = "api", path = "/events" }'
    async with run_route(route(sink, extra=connection)) as d:
        stats = d.services.route_stats("out").sink("http")
        await d.wait_for(lambda: stats.failed >= 1, what="a failed attempt")
        assert await d.services.store.dlq_count() == 0  # waits for a fixed config instead
    assert "invalid_client" in stats.last_error
    assert "a-wrong-secret" not in stats.last_error
    assert oauth_server.token_requests == 1
    assert receiver.received == []


async def test_a_url_off_the_connection_origin_is_dead_lettered_unsent(
    run_route: Any, receiver: Receiver
) -> None:
    connection = '[connections.api]\nurl = "http://127.0.0.1:1"\nheaders = { X-Key = "k" }'
    sink = f'{{ type = "http", connection = "api", url = "{receiver.url}/steal" }}'
    async with run_route(route(sink, extra=connection)) as d:
        [entry] = await dead_letters(d)
    assert "outside connection:api" in entry.last_error
    assert receiver.received == []


# -- lifecycle and configuration ----------------------------------------------------------------


async def test_connection_clients_are_closed_when_the_daemon_stops(
    run_route: Any, receiver: Receiver
) -> None:
    async with run_route(route(f'{{ type = "http", url = "{receiver.url}" }}')) as d:
        await d.wait_delivered("out", 1)
        clients = d.services.shared["http"]
        [client] = clients._clients.values()
    assert client.closed
    assert "http" not in d.services.shared


async def test_an_unknown_connection_stops_the_route_with_a_clear_error(run_route: Any) -> None:
    async with run_route(route('{ type = "http", connection = "nope", path = "/x" }')) as d:
        health = d.services.health.components["out/route"]
    assert "unknown connection 'nope'" in health.last_error


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ('{ type = "http" }', "needs a 'url', or a 'connection'"),
        ('{ type = "http", url = "http://x.test", path = "/a" }', "either 'url' or 'path'"),
        ('{ type = "http", url = "http://x.test/${body.id" }', "never closed"),
        ('{ type = "http", url = "http://x.test", method = "PO ST" }', "HTTP method"),
        ('{ type = "http", url = "http://x.test", success = [42] }', "not an HTTP status"),
        ('{ type = "http", url = "http://x.test", body = "xml" }', "body"),
        (
            '{ type = "http", url = "http://x.test", sign = { secret = "whsec_!!" } }',
            "not valid base64",
        ),
    ],
)
def test_invalid_options_are_config_errors(sink: str, message: str, tmp_path: Path) -> None:
    _, registry = make_registry()
    text = f"""
    [routes.out]
    source = {{ type = "timer" }}
    sinks = [{sink}]
    """
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(text, tmp_path / "integrator.toml", registry)
    assert "whsec_!!" not in str(caught.value)
