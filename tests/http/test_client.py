"""The connection HTTP client over real loopback HTTP(S): URLs, auth, limits, TLS, sharing."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from aiohttp import web

from integrator.config import ConnectionConfig, convert, parse_config
from integrator.delivery.limits import LimiterRegistry
from integrator.http.auth import AuthProvider, set_header
from integrator.http.client import HttpClient, HttpClients, RequestError
from integrator.testing import make_registry
from tests.http.loopback import Certificates, make_certificates, serve
from tests.http.oauth_server import OAuthServer


def connection(**raw: Any) -> ConnectionConfig:
    config: ConnectionConfig = convert(raw, ConnectionConfig)
    return config


class Recorder:
    """An API that records each request it gets and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.in_flight = 0
        self.peak = 0
        self.delay = 0.0
        self.accept_token: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if request.path == "/redirect":
            raise web.HTTPFound("/elsewhere")
        expected = f"Bearer {self.accept_token}"
        if self.accept_token is not None and request.headers.get("Authorization") != expected:
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"path": request.path, "query": dict(request.query)})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def api() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    async with serve(recorder.app()) as url:
        yield recorder, url


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    """Build clients that are closed after the test."""
    made: list[HttpClient] = []

    def make(config: ConnectionConfig, name: str | None = "api", **kwargs: Any) -> HttpClient:
        client = HttpClient(name, config, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


class RotatingToken(AuthProvider):
    """A bearer token that is stale until the first 401 asks for a new one."""

    class Options(msgspec.Struct):
        pass

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options or self.Options(), **kwargs)
        self.token = "stale"
        self.refused: list[str | None] = []

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        set_header(headers, "Authorization", f"Bearer {self.token}")

    async def on_unauthorized(self, headers: Mapping[str, str] | None = None) -> bool:
        self.refused.append((headers or {}).get("Authorization"))
        self.token = "fresh"
        return True


# -- URLs and headers ---------------------------------------------------------------------------


async def test_a_path_is_appended_to_the_connection_url_with_its_headers(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    client = client_for(connection(url=f"{url}/v2", headers={"X-Tenant": "acme"}))
    response = await client.request("GET", client.resolve(path="/items"), params={"q": "a b"})
    assert response.status == 200
    assert response.json() == {"path": "/v2/items", "query": {"q": "a b"}}
    seen = recorder.requests[0].headers
    assert seen["X-Tenant"] == "acme"
    assert seen["User-Agent"].startswith("integrator/")


async def test_request_headers_override_connection_headers_whatever_their_case(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    client = client_for(connection(url=url, headers={"X-Tenant": "acme"}))
    await client.request("GET", client.resolve(), headers={"x-tenant": "other"})
    assert recorder.requests[0].headers.getall("X-Tenant") == ["other"]


async def test_a_url_outside_the_connection_origin_is_refused_unsent(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    client = client_for(connection(url="http://127.0.0.1:1/v1"))
    with pytest.raises(RequestError, match="outside connection:api") as caught:
        await client.request("GET", f"{url}/steal")
    assert not caught.value.retriable
    assert recorder.requests == []


async def test_redirects_are_answered_not_followed(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    client = client_for(connection(url=url))
    response = await client.request("GET", client.resolve(path="/redirect"))
    assert response.status == 302
    assert [r.path for r in recorder.requests] == ["/redirect"]


# -- failures without an answer -----------------------------------------------------------------


async def test_no_answer_within_the_timeout_is_a_retriable_request_error(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    recorder.delay = 0.3
    client = client_for(connection(url=url, timeout="50ms"))
    with pytest.raises(RequestError, match=r"no answer within 0\.05s") as caught:
        await client.request("GET", client.resolve())
    assert caught.value.retriable


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_response_body_over_the_limit_is_a_permanent_request_error(
    client_for: Any, chunked: bool
) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = 3000
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"x" * 1000)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    async with serve(app) as url:
        client = client_for(connection(url=url))
        with pytest.raises(RequestError, match="response body over 2000 bytes") as caught:
            await client.request("GET", client.resolve(path="/big"), max_body=2000)
        assert not caught.value.retriable
        response = await client.request("GET", client.resolve(path="/big"), max_body=3000)
        assert response.body == b"x" * 3000


async def test_a_compressed_body_is_held_to_the_limit_once_decoded(client_for: Any) -> None:
    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"x" * 100_000)  # ~150 bytes on the wire
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/bomb", bomb)
    async with serve(app) as url:
        client = client_for(connection(url=url))
        with pytest.raises(RequestError, match="response body over 2000 bytes"):
            await client.request("GET", client.resolve(path="/bomb"), max_body=2000)


async def test_a_refused_connection_is_a_retriable_request_error(client_for: Any) -> None:
    client = client_for(connection(url="http://127.0.0.1:1"))
    with pytest.raises(RequestError, match=r"GET http://127\.0\.0\.1:1") as caught:
        await client.request("GET", client.resolve(), params={"api_key": "s3cr3t-value"})
    assert caught.value.retriable
    assert "s3cr3t-value" not in str(caught.value)


# -- auth ---------------------------------------------------------------------------------------


async def test_a_401_makes_the_provider_refresh_once_and_the_request_go_again(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    recorder.accept_token = "fresh"
    auth = RotatingToken()
    client = client_for(connection(url=url), auth=auth)
    response = await client.request("GET", client.resolve())
    assert response.status == 200
    assert auth.refused == ["Bearer stale"]
    sent = [r.headers["Authorization"] for r in recorder.requests]
    assert sent == ["Bearer stale", "Bearer fresh"]


async def test_a_second_401_is_returned_without_another_refresh(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    recorder.accept_token = "never"
    auth = RotatingToken()
    client = client_for(connection(url=url), auth=auth)
    response = await client.request("GET", client.resolve())
    assert response.status == 401
    assert len(auth.refused) == 1
    assert len(recorder.requests) == 2


async def test_oauth2_tokens_are_kept_in_the_store_state(oauth_server: OAuthServer) -> None:
    oauth_server.add_client("poller", "client-secret-1")

    class StateStore:
        def __init__(self) -> None:
            self.state: dict[str, Any] = {}

        async def get_state(self, key: str) -> Any:
            return self.state.get(key)

        async def set_state(self, key: str, value: Any) -> None:
            self.state[key] = value

    _, registry = make_registry()
    store = StateStore()
    clients = HttpClients(registry=registry, store=store)  # type: ignore[arg-type]
    config = connection(
        url=oauth_server.url,
        auth={
            "type": "oauth2",
            "options": convert(
                {
                    "token_url": oauth_server.token_url,
                    "client_id": "poller",
                    "client_secret": "client-secret-1",
                },
                registry.get("auth", "oauth2").component.Options,  # type: ignore[union-attr]
            ),
        },
    )
    client = await clients.acquire("idp", config)
    try:
        response = await client.request("GET", client.resolve(path="/resource"))
    finally:
        await clients.release(client)
    assert response.status == 200
    assert response.json()["client_id"] == "poller"
    [(key, saved)] = store.state.items()
    assert key.startswith("auth:oauth2:")
    assert saved["access_token"] in oauth_server.by_access


# -- limits -------------------------------------------------------------------------------------


async def test_the_connection_rate_limit_makes_requests_wait_under_its_shared_key(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    _, url = api
    limiters = LimiterRegistry()
    config = connection(url=url, rate_limit={"requests": 2, "per": "100ms"})
    client = client_for(config, limiters=limiters)
    for _ in range(5):
        await client.request("GET", client.resolve())
    assert limiters.stats["connection:api"].waits >= 1
    assert limiters.rate("connection:api") is client._rate


async def test_max_concurrency_bounds_requests_in_flight(
    api: tuple[Recorder, str], client_for: Any
) -> None:
    recorder, url = api
    recorder.delay = 0.05
    client = client_for(connection(url=url, max_concurrency=2))
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(client.request, "GET", client.resolve())
    assert len(recorder.requests) == 6
    assert recorder.peak == 2


# -- one client per connection ------------------------------------------------------------------


async def test_users_of_a_connection_share_one_client_until_the_last_release() -> None:
    clients = HttpClients()
    config = connection(url="http://127.0.0.1:1")
    first = await clients.acquire("api", config)
    second = await clients.acquire("api", config)
    assert first is second
    await clients.release(first)
    assert not first.closed
    await clients.release(second)
    assert first.closed


async def test_the_last_release_closes_the_client_even_while_cancelled() -> None:
    clients = HttpClients()
    client = await clients.acquire("api", connection(url="http://127.0.0.1:1"))
    close = client.close
    finished = False

    async def slow_close() -> None:  # an auth provider's close that awaits something
        nonlocal finished
        await anyio.lowlevel.checkpoint()
        await close()
        finished = True

    client.close = slow_close  # type: ignore[method-assign]
    with anyio.CancelScope() as scope:
        scope.cancel()  # as when a component's task is cancelled and it cleans up
        await clients.release(client)
    assert finished and client.closed


async def test_changed_connection_settings_give_new_users_a_new_client() -> None:
    clients = HttpClients()
    old = await clients.acquire("api", connection(url="http://127.0.0.1:1"))
    new = await clients.acquire("api", connection(url="http://127.0.0.1:2"))
    assert new is not old
    await clients.release(old)
    assert old.closed and not new.closed
    await clients.close()
    assert new.closed


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_api(certs: Certificates) -> AsyncIterator[str]:
    async with serve(Recorder().app(), certs.server_context()) as url:
        yield url


@pytest.fixture
async def mtls_api(certs: Certificates) -> AsyncIterator[str]:
    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        return web.json_response({"client": subject.get("commonName")})

    app = web.Application()
    app.router.add_get("/", whoami)
    async with serve(app, certs.server_context(require_client_cert=True)) as url:
        yield url


async def test_tls_is_verified_by_default_so_an_unknown_ca_fails(
    tls_api: str, client_for: Any
) -> None:
    client = client_for(connection(url=tls_api))
    with pytest.raises(RequestError, match=r"(?i)certificate"):
        await client.request("GET", client.resolve())


async def test_a_custom_ca_bundle_makes_the_server_trusted(
    tls_api: str, certs: Certificates, client_for: Any
) -> None:
    client = client_for(connection(url=tls_api, tls={"ca_file": str(certs.ca)}))
    assert (await client.request("GET", client.resolve())).status == 200


async def test_verification_can_be_turned_off(tls_api: str, client_for: Any) -> None:
    client = client_for(connection(url=tls_api, tls={"verify": False}))
    assert (await client.request("GET", client.resolve())).status == 200


async def test_a_client_certificate_is_presented_for_mutual_tls(
    mtls_api: str, certs: Certificates, client_for: Any
) -> None:
    tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert)}
    tls["key_file"] = str(certs.client_key)
    client = client_for(connection(url=mtls_api, tls=tls))
    response = await client.request("GET", client.resolve())
    assert response.json() == {"client": "integrator-client"}


async def test_mutual_tls_without_a_client_certificate_fails(
    mtls_api: str, certs: Certificates, client_for: Any
) -> None:
    client = client_for(connection(url=mtls_api, tls={"ca_file": str(certs.ca)}))
    with pytest.raises(RequestError):
        await client.request("GET", client.resolve())


def test_an_unreadable_ca_file_is_a_config_error_naming_the_connection(tmp_path: Path) -> None:
    from integrator.errors import ConfigError

    with pytest.raises(ConfigError, match=r"connections\.api\.tls: cannot load certificates"):
        HttpClient("api", connection(tls={"ca_file": str(tmp_path / "missing.pem")}))


async def test_the_token_endpoint_gets_the_connections_ca_and_client_certificate(
    certs: Certificates,
) -> None:
    """OAuth2 behind a private CA with mutual TLS (RFC 8705): the token request trusts the
    connection's CA bundle and presents its client certificate, like the API calls do."""
    seen: list[str | None] = []

    def client_name(request: web.Request) -> str | None:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        return dict(item[0] for item in peer["subject"]).get("commonName") if peer else None

    async def token(request: web.Request) -> web.Response:
        seen.append(client_name(request))
        return web.json_response({"access_token": "t0k", "token_type": "Bearer", "expires_in": 300})

    async def api(request: web.Request) -> web.Response:
        return web.json_response({"auth": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/api", api)
    async with serve(app, certs.server_context(require_client_cert=True)) as url:
        _, registry = make_registry()
        loaded = parse_config(
            f"""
            [connections.api]
            url = "{url}"
            tls = {{ ca_file = "{certs.ca}", cert_file = "{certs.client_cert}", key_file = "{certs.client_key}" }}
            auth = {{ type = "oauth2", token_url = "{url}/token", client_id = "id", client_secret = "s" }}
            """,
            Path("test.toml"),
            registry,
        )
        config = loaded.connections["api"]
        clients = HttpClients(registry=registry)
        try:
            client = await clients.acquire("api", config)
            response = await client.request("GET", client.resolve(path="/api"))
        finally:
            await clients.close()
    assert response.json() == {"auth": "Bearer t0k"}
    assert seen == ["integrator-client"]
