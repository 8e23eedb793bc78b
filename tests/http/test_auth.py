"""Static auth providers, registration through the plugin hook, and config validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pluggy
import pytest

from integrator import hookspecs
from integrator.config import convert, parse_config
from integrator.errors import ConfigError, IntegratorError
from integrator.http import auth as auth_module
from integrator.http.auth import (
    ApiKeyAuth,
    AuthError,
    AuthProvider,
    BasicAuth,
    BearerAuth,
    build_auth,
)
from integrator.http.oauth2 import OAuth2Auth
from integrator.plugins import DEFAULT_PLUGINS, Registry, build_registry

KEY = "k3y-&+=/value"


def make(cls: type[AuthProvider], **options: Any) -> AuthProvider:
    return cls(convert(options, cls.Options))


async def applied(provider: AuthProvider) -> tuple[dict[str, str], dict[str, str]]:
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    await provider.apply(headers, params)
    return headers, params


@pytest.fixture
def registry() -> Registry:
    pm = pluggy.PluginManager("integrator")
    pm.add_hookspecs(hookspecs)
    pm.register(auth_module, name="integrator.http.auth")
    return build_registry(pm)


# -- static providers ---------------------------------------------------------------------------


async def test_api_key_goes_in_the_x_api_key_header_by_default() -> None:
    assert await applied(make(ApiKeyAuth, key=KEY)) == ({"X-API-Key": KEY}, {})


async def test_api_key_header_name_is_configurable() -> None:
    headers, _ = await applied(make(ApiKeyAuth, key=KEY, header="X-Token"))
    assert headers == {"X-Token": KEY}


async def test_api_key_can_go_in_a_query_parameter() -> None:
    assert await applied(make(ApiKeyAuth, key=KEY, query="api_key")) == ({}, {"api_key": KEY})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"header": "X-Key", "query": "key"}, "either 'header' or 'query', not both"),
        ({"header": "X-Key\r\nEvil: 1"}, "must be a valid HTTP header name"),
    ],
)
def test_api_key_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(ApiKeyAuth, key=KEY, **options)


async def test_bearer_sets_the_authorization_header() -> None:
    headers, params = await applied(make(BearerAuth, token=KEY))
    assert headers == {"Authorization": f"Bearer {KEY}"} and params == {}


async def test_basic_auth_header_decodes_with_aiohttp() -> None:
    headers, _ = await applied(make(BasicAuth, username="zoë", password="pa:ss wörd"))
    decoded = aiohttp.BasicAuth.decode(headers["Authorization"], encoding="utf-8")
    assert (decoded.login, decoded.password) == ("zoë", "pa:ss wörd")


def test_basic_username_cannot_hold_a_colon() -> None:
    with pytest.raises(ValueError, match="cannot contain ':'"):
        make(BasicAuth, username="a:b", password=KEY)


async def test_credentials_replace_a_header_spelled_differently() -> None:
    headers = {"authorization": "Bearer stale", "Accept": "application/json"}
    await make(BearerAuth, token=KEY).apply(headers, {})
    assert headers == {"Accept": "application/json", "Authorization": f"Bearer {KEY}"}


async def test_static_credentials_do_not_ask_for_a_retry_after_401() -> None:
    provider = make(BearerAuth, token=KEY)
    assert await provider.on_unauthorized({"Authorization": f"Bearer {KEY}"}) is False


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (ApiKeyAuth, {"key": KEY}),
        (ApiKeyAuth, {"key": KEY, "query": "k"}),
        (BearerAuth, {"token": KEY}),
        (BasicAuth, {"username": "u", "password": KEY}),
    ],
)
def test_reprs_hide_the_secret(cls: type[AuthProvider], options: dict[str, Any]) -> None:
    provider = make(cls, **options)
    assert KEY not in repr(provider) and KEY not in repr(provider.options)
    assert "***" in repr(provider)


def test_auth_error_is_an_integrator_error_and_copies_keep_its_fields() -> None:
    err = AuthError("refused", permanent=True, code="invalid_grant", retry_after=3.0)
    copy = err.copy()
    assert isinstance(copy, IntegratorError) and copy is not err
    assert (copy.message, copy.permanent, copy.code, copy.retry_after) == (
        "refused",
        True,
        "invalid_grant",
        3.0,
    )


# -- registration and configuration --------------------------------------------------------------


def test_auth_plugin_is_a_builtin() -> None:
    assert "integrator.http.auth" in DEFAULT_PLUGINS


def test_hook_registers_the_four_providers(registry: Registry) -> None:
    assert registry.names("auth") == ["api_key", "basic", "bearer", "oauth2"]
    for name in registry.names("auth"):
        registered = registry.get("auth", name)
        assert registered is not None and issubclass(registered.component, AuthProvider)


CONFIG = """
[connections.crm]
url = "https://api.example-crm.test/v2"

[connections.crm.auth]
type = "oauth2"
token_url = "https://auth.example-crm.test/token"
client_id = "crm-client"
client_secret = "${{env:CRM_SECRET}}"
{extra}
"""


def load(registry: Registry, extra: str = "") -> Any:
    return parse_config(CONFIG.format(extra=extra), Path("integrator.toml"), registry)


async def test_config_auth_table_builds_an_oauth2_provider(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_SECRET", "crm-secret-value")
    config = load(registry, 'refresh_margin = "30s"\nscope = ["read", "write"]')
    provider = build_auth(registry, config.connections["crm"].auth)
    assert isinstance(provider, OAuth2Auth)
    assert provider.options.refresh_margin == 30
    assert provider.options.client_secret is not None
    assert provider.options.client_secret.reveal() == "crm-secret-value"
    assert "crm-secret-value" not in repr(provider) + repr(provider.options)
    await provider.close()


def test_no_auth_table_builds_no_provider(registry: Registry) -> None:
    assert build_auth(registry, None) is None


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('grant = "refresh_token"', "connections.crm.auth: the refresh_token grant needs"),
        ("scopes = 'read'", "connections.crm.auth.scopes: unknown key 'scopes' (did you mean"),
        ('auth_method = "private_key_jwt"', "connections.crm.auth.auth_method"),
        ('refresh_margin = "soon"', "connections.crm.auth.refresh_margin"),
    ],
)
def test_invalid_oauth2_tables_are_config_errors_naming_the_key(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, extra: str, problem: str
) -> None:
    monkeypatch.setenv("CRM_SECRET", "crm-secret-value")
    with pytest.raises(ConfigError) as caught:
        load(registry, extra)
    assert problem in str(caught.value)
    assert "crm-secret-value" not in str(caught.value)


def test_api_key_with_header_and_query_is_a_config_error(registry: Registry) -> None:
    text = """
[connections.api.auth]
type = "api_key"
key = "abcd-1234-secret"
header = "X-Key"
query = "key"
"""
    with pytest.raises(ConfigError, match="either 'header' or 'query', not both") as caught:
        parse_config(text, Path("integrator.toml"), registry)
    assert "abcd-1234-secret" not in str(caught.value)
