"""OAuth2 auth against a real authorization server (authlib's RFC 6749 server) on loopback."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest

from integrator.config import convert
from integrator.http.auth import AuthError
from integrator.http.oauth2 import OAuth2Auth, OAuth2Options
from tests.http.oauth_server import OAuthServer

CLIENT_ID = "integrator"
#: Needs RFC 6749 §2.3.1 encoding in the Basic header: ':' ' ' '+' '%' '/' and non-ASCII.
SECRET = "s3cr:t with+plus/%25-é"

Make = Callable[..., OAuth2Auth]


class MemoryTokenStore:
    """Our own TokenStore interface, kept in a dict (values go through JSON, as on disk)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        return json.loads(self.values[key]) if key in self.values else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        self.values[key] = json.dumps(value)


class BrokenTokenStore:
    async def get(self, key: str) -> dict[str, Any] | None:
        return None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        raise OSError("disk full")


@pytest.fixture
def server(oauth_server: OAuthServer) -> OAuthServer:
    oauth_server.add_client(CLIENT_ID, SECRET)
    return oauth_server


@pytest.fixture
async def make(server: OAuthServer) -> AsyncIterator[Make]:
    made: list[OAuth2Auth] = []

    def make(*, store: Any = None, **options: Any) -> OAuth2Auth:
        values = {"token_url": server.token_url, "client_id": CLIENT_ID, "client_secret": SECRET}
        auth = OAuth2Auth(convert({**values, **options}, OAuth2Options), token_store=store)
        made.append(auth)
        return auth

    yield make
    for auth in made:
        await auth.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(auth: OAuth2Auth, http: aiohttp.ClientSession, url: str) -> int:
    """What the HTTP client does: apply, and after a 401 refresh once and retry once."""
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    await auth.apply(headers, params)
    async with http.get(url, headers=headers, params=params) as response:
        if response.status != 401:
            return response.status
    if not await auth.on_unauthorized(headers):
        return 401
    headers, params = {}, {}
    await auth.apply(headers, params)
    async with http.get(url, headers=headers, params=params) as response:
        return response.status


async def bearer(auth: OAuth2Auth) -> str:
    headers: dict[str, str] = {}
    await auth.apply(headers, {})
    return headers["Authorization"]


def refresh_options(refresh_token: str, **more: Any) -> dict[str, Any]:
    return {"grant": "refresh_token", "refresh_token": refresh_token, "scope": "read", **more}


# -- client credentials -----------------------------------------------------------------------


async def test_client_credentials_token_is_accepted_by_the_resource(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    auth = make()
    assert await call(auth, http, server.resource_url) == 200
    assert server.grant_types() == ["client_credentials"]
    assert server.auth_methods == ["client_secret_basic"]


async def test_cached_token_is_reused_until_it_is_due(server: OAuthServer, make: Make) -> None:
    auth = make()
    tokens = {await bearer(auth) for _ in range(5)}
    assert len(tokens) == 1
    assert server.token_requests == 1


async def test_client_secret_post_sends_credentials_in_the_body(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    server.add_client("poster", SECRET, auth_methods=("client_secret_post",))
    auth = make(client_id="poster", auth_method="client_secret_post")
    assert await call(auth, http, server.resource_url) == 200
    assert server.auth_methods == ["client_secret_post"]


async def test_scope_list_and_audience_are_sent(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    auth = make(scope=["read", "write"], audience="https://api.example.test")
    headers: dict[str, str] = {}
    await auth.apply(headers, {})
    async with http.get(server.resource_url, headers=headers) as response:
        assert (await response.json())["scope"] == "read write"
    assert server.forms[0]["scope"] == "read write"
    assert server.forms[0]["audience"] == "https://api.example.test"


async def test_token_is_refreshed_refresh_margin_before_it_expires(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    server.expires_in = 2
    auth = make(refresh_margin="1s")
    first = await bearer(auth)
    assert await bearer(auth) == first
    await anyio.sleep(1.1)
    assert await bearer(auth) != first
    assert server.token_requests == 2
    assert await call(auth, http, server.resource_url) == 200


async def test_margin_longer_than_the_token_lifetime_does_not_refetch_each_time(
    server: OAuthServer, make: Make
) -> None:
    server.expires_in = 2  # the default margin is 60 s
    auth = make()
    for _ in range(3):
        await bearer(auth)
    assert server.token_requests == 1


async def test_a_401_from_the_resource_triggers_exactly_one_refresh(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    auth = make()
    assert await call(auth, http, server.resource_url) == 200
    server.revoke_access_tokens()
    assert await call(auth, http, server.resource_url) == 200
    assert server.token_requests == 2
    assert server.resource_requests == 3  # 200, 401, and the retry's 200


async def test_concurrent_401s_share_one_refresh(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    auth = make()
    await bearer(auth)
    server.revoke_access_tokens()
    server.delay = 0.05
    statuses: list[int] = []

    async def one() -> None:
        statuses.append(await call(auth, http, server.resource_url))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert statuses == [200] * 10
    assert server.token_requests == 2


async def test_twenty_concurrent_requests_make_one_token_request(
    server: OAuthServer, make: Make
) -> None:
    server.delay = 0.1
    auth = make()
    tokens: list[str] = []

    async def one() -> None:
        tokens.append(await bearer(auth))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(tokens) == 20
    assert len(set(tokens)) == 1
    assert server.token_requests == 1


async def test_transient_refresh_failure_keeps_the_current_token_until_it_expires(
    server: OAuthServer, make: Make
) -> None:
    server.expires_in = 2
    auth = make(refresh_margin="1s")
    first = await bearer(auth)
    await anyio.sleep(1.1)
    server.fail_next = 1
    assert await bearer(auth) == first
    assert await bearer(auth) == first  # and does not ask again at once
    assert server.token_requests == 2


# -- refresh tokens -----------------------------------------------------------------------------


async def test_rotated_refresh_token_is_used_next_and_saved(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    original = server.issue_refresh_token(CLIENT_ID)
    store = MemoryTokenStore()
    auth = make(store=store, **refresh_options(original))
    assert await call(auth, http, server.resource_url) == 200
    saved = (await store.get(auth.store_key)) or {}
    rotated = saved["refresh_token"]
    assert rotated not in (None, original)
    server.revoke_access_tokens()
    assert await call(auth, http, server.resource_url) == 200  # the original is revoked now
    assert [form["refresh_token"] for form in server.forms] == [original, rotated]
    assert server.grant_types() == ["refresh_token", "refresh_token"]


async def test_restart_uses_the_saved_access_token_without_a_new_grant(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    store = MemoryTokenStore()
    first = make(store=store)
    assert await call(first, http, server.resource_url) == 200
    await first.close()
    second = make(store=store)
    assert await call(second, http, server.resource_url) == 200
    assert server.token_requests == 1


async def test_restart_refreshes_with_the_saved_rotated_refresh_token(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    original = server.issue_refresh_token(CLIENT_ID)
    store = MemoryTokenStore()
    first = make(store=store, **refresh_options(original))
    await bearer(first)
    await first.close()
    server.revoke_access_tokens()
    second = make(store=store, **refresh_options(original))
    assert await call(second, http, server.resource_url) == 200
    assert server.forms[-1]["refresh_token"] != original


async def test_a_newly_configured_refresh_token_wins_over_the_saved_one(
    server: OAuthServer, make: Make
) -> None:
    store = MemoryTokenStore()
    first = make(store=store, **refresh_options(server.issue_refresh_token(CLIENT_ID)))
    await bearer(first)
    replacement = server.issue_refresh_token(CLIENT_ID)
    second = make(store=store, **refresh_options(replacement))
    await bearer(second)
    assert server.forms[-1]["refresh_token"] == replacement


async def test_public_client_refreshes_with_its_client_id_only(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession
) -> None:
    server.add_client("cli", None, auth_methods=("none",))
    refresh_token = server.issue_refresh_token("cli")
    auth = make(client_id="cli", client_secret=None, **refresh_options(refresh_token))
    assert await call(auth, http, server.resource_url) == 200
    assert server.forms[0]["client_id"] == "cli"
    assert "client_secret" not in server.forms[0]


async def test_a_failing_token_store_does_not_stop_requests(
    server: OAuthServer, make: Make, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    auth = make(store=BrokenTokenStore())
    with caplog.at_level(logging.ERROR, "integrator.http.auth"):
        assert await call(auth, http, server.resource_url) == 200
    assert "could not save the OAuth2 token" in caplog.text


# -- refusals and failures ----------------------------------------------------------------------


async def test_revoked_refresh_token_fails_permanently_without_asking_again(
    server: OAuthServer, make: Make
) -> None:
    revoked = server.issue_refresh_token(CLIENT_ID)
    server.revoke_refresh_tokens()
    auth = make(**refresh_options(revoked))
    with pytest.raises(AuthError) as first:
        await bearer(auth)
    err = first.value
    assert err.permanent and err.code == "invalid_grant"
    assert f"OAuth2 token request to {server.token_url} was refused: invalid_grant" in str(err)
    assert "obtain a new refresh token and reload" in str(err)
    assert revoked not in str(err) and SECRET not in str(err)
    for _ in range(3):
        with pytest.raises(AuthError, match="invalid_grant"):
            await bearer(auth)
    with pytest.raises(AuthError, match="invalid_grant"):
        await auth.on_unauthorized()
    assert server.token_requests == 1


async def test_reset_lets_a_permanently_failed_provider_try_again(
    server: OAuthServer, make: Make
) -> None:
    server.add_client("later", SECRET, grant_types=())
    auth = make(client_id="later")
    with pytest.raises(AuthError, match="unauthorized_client"):
        await bearer(auth)
    server.clients["later"].grant_types = ("client_credentials",)  # fixed at the server
    auth.reset()
    assert (await bearer(auth)).startswith("Bearer ")
    assert server.token_requests == 2


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_wrong_client_secret_is_a_permanent_invalid_client(
    server: OAuthServer, make: Make, method: str
) -> None:
    server.clients[CLIENT_ID].auth_methods = (method,)
    wrong = "not-the-secret-7f3a"
    auth = make(client_secret=wrong, auth_method=method)
    with pytest.raises(AuthError) as caught:
        await bearer(auth)
    assert caught.value.permanent and caught.value.code == "invalid_client"
    assert "check client_id, client_secret and auth_method" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in repr(caught.value)


async def test_token_endpoint_5xx_is_transient(server: OAuthServer, make: Make) -> None:
    server.fail_next = 1
    auth = make()
    with pytest.raises(AuthError, match="HTTP 503") as caught:
        await bearer(auth)
    assert not caught.value.permanent
    assert (await bearer(auth)).startswith("Bearer ")
    assert server.token_requests == 2


async def test_unreachable_token_endpoint_is_transient(make: Make) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    auth = make(token_url=f"http://127.0.0.1:{port}/token")
    with pytest.raises(AuthError, match=f"to http://127.0.0.1:{port}/token failed") as caught:
        await bearer(auth)
    assert not caught.value.permanent


async def test_reprs_never_show_secrets_or_tokens(server: OAuthServer, make: Make) -> None:
    refresh_token = server.issue_refresh_token(CLIENT_ID)
    auth = make(**refresh_options(refresh_token))
    token = (await bearer(auth)).removeprefix("Bearer ")
    shown = repr(auth) + repr(auth.options)
    for secret in (SECRET, refresh_token, token):
        assert secret not in shown


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"grant": "refresh_token"}, "needs a 'refresh_token'"),
        ({"client_secret": None}, "needs a 'client_secret'"),
        ({"token_url": "ftp://auth.example.test/token"}, "must be an http(s) URL"),
        ({"timeout": "0s"}, "'timeout' must be more than 0s"),
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    values = {
        "token_url": "https://auth.example.test/token",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        **options,
    }
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert(values, OAuth2Options).validate()


async def test_each_token_request_reports_its_outcome(server: OAuthServer, make: Make) -> None:
    """What feeds the token refresh metric and the token_refresh_failing alert."""
    outcomes: list[bool] = []
    good = make()
    good.on_token = outcomes.append
    await bearer(good)
    await bearer(good)  # cached: no second request
    bad = make(client_secret="not-the-client-secret-7f3a")
    bad.on_token = outcomes.append
    with pytest.raises(AuthError):
        await bearer(bad)
    assert outcomes == [True, False]


async def test_the_connection_client_counts_token_refreshes(server: OAuthServer) -> None:
    from pathlib import Path

    from integrator.config import parse_config
    from integrator.engine.stats import OpsStats
    from integrator.http.client import HttpClients
    from integrator.testing import make_registry

    _, registry = make_registry()
    loaded = parse_config(
        f"""
        [connections.crm]
        url = "{server.resource_url}"
        auth = {{ type = "oauth2", token_url = "{server.token_url}", client_id = "{CLIENT_ID}", client_secret = "{SECRET}" }}
        """,
        Path("test.toml"),
        registry,
    )
    ops = OpsStats()
    clients = HttpClients(registry=registry, ops=ops)
    try:
        client = await clients.acquire("crm", loaded.connections["crm"])
        assert (await client.request("GET", client.resolve())).status == 200
    finally:
        await clients.close()
    assert ops.token_refreshes == {("crm", "ok"): 1}
