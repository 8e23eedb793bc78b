"""Who may use the admin listener, and that it never shows a secret."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from integrator.admin import security
from integrator.admin.server import AdminServer
from integrator.config import AdminConfig, parse_config
from integrator.errors import ConfigError
from integrator.testing import make_registry
from integrator.types import Secret
from tests.admin.admin_support import Components, call

TOKEN = "adm-7f3c9e1b5d2a4c8e"
API_KEY = "sk_live_51HxQ2eKq9ZzT0pVb"


def guarded(out: Path, *, metrics_auth: bool = False) -> str:
    return f"""
        [admin]
        listen = "127.0.0.1:0"
        token = "{TOKEN}"
        metrics_auth = {str(metrics_auth).lower()}

        [routes.ticks]
        source = {{ type = "timer", interval = "10ms", count = 2 }}
        sinks = [{{ type = "file", path = "{out}" }}]
    """


# -- the token ------------------------------------------------------------------------------


async def test_api_without_a_token_is_a_401_problem(run_route, tmp_path: Path) -> None:
    async with run_route(guarded(tmp_path / "out.jsonl")) as d:
        reply = await call(d, "GET", "/api/routes")
    assert reply.status == 401
    assert reply.content_type == "application/problem+json"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.json()["status"] == 401


async def test_api_with_a_wrong_token_is_refused(run_route, tmp_path: Path) -> None:
    async with run_route(guarded(tmp_path / "out.jsonl")) as d:
        near_miss = await call(d, "GET", "/api/routes", token=TOKEN[:-1] + "x")
        prefix = await call(d, "GET", "/api/routes", token=TOKEN[:4])
        basic = await call(d, "GET", "/api/routes", headers={"Authorization": f"Basic {TOKEN}"})
    assert (near_miss.status, prefix.status, basic.status) == (401, 401, 401)


async def test_api_with_the_token_is_allowed(run_route, tmp_path: Path) -> None:
    async with run_route(guarded(tmp_path / "out.jsonl")) as d:
        reply = await call(d, "GET", "/api/routes", token=TOKEN)
    assert reply.status == 200


async def test_health_metrics_and_page_need_no_token_by_default(run_route, tmp_path: Path) -> None:
    async with run_route(guarded(tmp_path / "out.jsonl")) as d:
        statuses = [
            (await call(d, "GET", p)).status for p in ("/healthz", "/readyz", "/metrics", "/")
        ]
    assert statuses == [200, 200, 200, 200]


async def test_metrics_auth_asks_for_the_token_on_metrics(run_route, tmp_path: Path) -> None:
    async with run_route(guarded(tmp_path / "out.jsonl", metrics_auth=True)) as d:
        anonymous = await call(d, "GET", "/metrics")
        with_token = await call(d, "GET", "/metrics", token=TOKEN)
        health = await call(d, "GET", "/healthz")
    assert (anonymous.status, with_token.status, health.status) == (401, 200, 200)


async def test_tokens_are_compared_in_constant_time(
    run_route, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    async with run_route(guarded(tmp_path / "out.jsonl")) as d:
        reply = await call(d, "GET", "/api/routes", token="wrong")
    assert reply.status == 401
    assert compared == [(b"wrong", TOKEN.encode())]


# -- where it may listen --------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:8626", "[::]:8626", "192.0.2.10:8626", ":8626"])
def test_config_refuses_listening_beyond_loopback_without_a_token(
    tmp_path: Path, listen: str
) -> None:
    _, registry = make_registry()
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[admin]\nlisten = "{listen}"\n', tmp_path / "i.toml", registry)
    [problem] = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'i.toml'}:1: admin: ")
    assert "set [admin] token" in problem


@pytest.mark.parametrize("listen", ["127.0.0.1:8626", "[::1]:8626", "localhost:8626"])
def test_loopback_needs_no_token(tmp_path: Path, listen: str) -> None:
    _, registry = make_registry()
    config = parse_config(f'[admin]\nlisten = "{listen}"\n', tmp_path / "i.toml", registry)
    assert config.admin.token is None


def test_beyond_loopback_is_allowed_with_a_token(tmp_path: Path) -> None:
    _, registry = make_registry()
    text = f'[admin]\nlisten = "0.0.0.0:8626"\ntoken = "{TOKEN}"\n'
    config = parse_config(text, tmp_path / "i.toml", registry)
    assert config.admin.token == Secret(TOKEN)


def test_metrics_auth_without_a_token_is_a_config_error(tmp_path: Path) -> None:
    _, registry = make_registry()
    with pytest.raises(ConfigError, match="metrics_auth = true needs"):
        parse_config("[admin]\nmetrics_auth = true\n", tmp_path / "i.toml", registry)


def test_the_server_itself_refuses_beyond_loopback_without_a_token() -> None:
    """A config changed in code skips the loader's check, not the server's."""
    config = AdminConfig()
    config.listen = "0.0.0.0:0"  # assignment does not run __post_init__
    with pytest.raises(security.ExposureError, match="set \\[admin\\] token"):
        AdminServer(daemon=None, config=config)  # type: ignore[arg-type]


# -- requests a web page could forge --------------------------------------------------------


def open_route(out: Path) -> str:
    return f"""
        [admin]
        listen = "127.0.0.1:0"

        [routes.ticks]
        source = {{ type = "timer", interval = "10ms", count = 2 }}
        sinks = [{{ type = "file", path = "{out}" }}]
    """


async def test_without_a_token_a_foreign_host_header_is_refused(run_route, tmp_path: Path) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: refuse that name."""
    async with run_route(open_route(tmp_path / "out.jsonl")) as d:
        foreign = await call(d, "GET", "/api/routes", headers={"Host": "evil.example:8626"})
        local = await call(d, "GET", "/api/routes", headers={"Host": "localhost:8626"})
    assert foreign.status == 403
    assert local.status == 200


async def test_without_a_token_a_cross_site_post_is_refused(run_route, tmp_path: Path) -> None:
    async with run_route(open_route(tmp_path / "out.jsonl")) as d:
        reply = await call(
            d, "POST", "/api/routes/ticks/pause", headers={"Origin": "https://evil.example"}
        )
        assert not d.daemon.routes["ticks"].paused
    assert reply.status == 403


# -- secrets --------------------------------------------------------------------------------


async def test_no_admin_response_shows_a_secret(
    run_route, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token and a sink's API key (which its errors quote) never leave the listener."""
    monkeypatch.setenv("TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_API_KEY", API_KEY)
    toml = """
        [admin]
        listen = "127.0.0.1:0"
        token = "${env:TEST_ADMIN_TOKEN}"

        [routes.refused]
        source = { type = "timer", interval = "5ms", count = 2 }
        sinks = [{ type = "rejecting", key = "${env:TEST_API_KEY}" }]
    """
    async with run_route(toml, Components()) as d:
        await d.wait_for(lambda: d.services.stats["refused"].sink("rejecting").dead == 2)
        entry_id = (await d.services.store.dlq_list())[0].id
        assert API_KEY in (await d.services.store.dlq_get(entry_id)).last_error  # it is there
        replies = [
            await call(d, method, path, token=TOKEN)
            for method, path in [
                ("GET", "/"),
                ("GET", "/healthz"),
                ("GET", "/readyz"),
                ("GET", "/metrics"),
                ("GET", "/api/status"),
                ("GET", "/api/routes"),
                ("GET", "/api/routes/refused"),
                ("GET", "/api/dlq"),
                ("GET", f"/api/dlq/{entry_id}"),
                ("POST", "/api/routes/refused/pause"),
                ("POST", "/api/routes/refused/poll"),
                ("POST", "/api/reload"),
            ]
        ]
        replies.append(await call(d, "GET", "/api/routes", token="wrong"))
    for reply in replies:
        assert reply.status < 500
        assert TOKEN not in reply.text
        assert API_KEY not in reply.text
    status = replies[4].json()
    assert status["routes"][0]["last_error"] == "remote refused the message (api key ***)"
