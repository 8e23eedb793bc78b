"""A real OAuth2 authorization server for tests: authlib's RFC 6749 server on aiohttp.

authlib implements the token endpoint (client authentication, client credentials
and refresh token grants, error responses); this module only adapts it to aiohttp
and keeps clients and tokens in memory. It also serves ``/resource``, a protected
resource that checks bearer tokens with authlib's RFC 6750 validator. Counters
let tests assert how many token requests a client made.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator

ALL_METHODS = ["client_secret_basic", "client_secret_post", "none"]


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str | None
    grant_types: tuple[str, ...] = ("client_credentials", "refresh_token")
    auth_methods: tuple[str, ...] = ("client_secret_basic",)
    scope: str = "read write"

    def get_client_id(self) -> str:
        return self.client_id

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and secrets.compare_digest(
            self.client_secret.encode(), client_secret.encode()
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in self.auth_methods

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class Token(TokenMixin):
    client_id: str
    access_token: str
    expires_in: float
    scope: str = ""
    refresh_token: str | None = None
    user: str | None = None
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> float:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked


class AiohttpRequest(OAuth2Request):
    """An aiohttp request with its form already read (authlib's grants are synchronous)."""

    def __init__(self, request: web.Request, form: dict[str, str]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._form = form
        self._args = dict(request.query)
        self.payload = BasicOAuth2Payload({**self._args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotate on every use

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = self.server.by_refresh.get(refresh_token)
        return None if token is None or token.refresh_revoked else token

    def authenticate_user(self, refresh_token: Token) -> str | None:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.refresh_revoked = True


class AccessTokenValidator(BearerTokenValidator):
    def __init__(self, server: OAuthServer) -> None:
        super().__init__()
        self.server = server

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.server.by_access.get(token_string)


class OAuthServer(AuthorizationServer):
    """The authorization server plus a protected resource, on one aiohttp app."""

    def __init__(self, expires_in: float = 3600) -> None:
        super().__init__()
        self.expires_in = expires_in
        self.clients: dict[str, Client] = {}
        self.by_access: dict[str, Token] = {}
        self.by_refresh: dict[str, Token] = {}
        self.token_requests = 0
        self.resource_requests = 0
        self.forms: list[dict[str, str]] = []
        self.auth_methods: list[str] = []
        self.fail_next = 0  # answer this many token requests with 503
        self.delay = 0.0  # seconds each token request takes
        self.url = ""
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(24),
                refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: self.expires_in,
            ),
        )
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(RefreshTokenGrant)
        self.protector = ResourceProtector()
        self.protector.register_token_validator(AccessTokenValidator(self))

    # -- test controls ----------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def resource_url(self) -> str:
        return f"{self.url}/resource"

    def add_client(self, client_id: str, client_secret: str | None, **kwargs: Any) -> Client:
        client = self.clients[client_id] = Client(client_id, client_secret, **kwargs)
        return client

    def issue_refresh_token(self, client_id: str, scope: str = "read") -> str:
        """What an operator gets once, out of band, from an authorization code flow."""
        token = Token(
            client_id=client_id,
            access_token=secrets.token_urlsafe(24),
            expires_in=self.expires_in,
            scope=scope,
            refresh_token=secrets.token_urlsafe(32),
            user="operator",
        )
        self.by_refresh[token.refresh_token] = token  # type: ignore[index]
        return token.refresh_token  # type: ignore[return-value]

    def revoke_access_tokens(self) -> None:
        for token in self.by_access.values():
            token.revoked = True

    def revoke_refresh_tokens(self) -> None:
        for token in self.by_refresh.values():
            token.refresh_revoked = True

    def grant_types(self) -> list[str]:
        return [form.get("grant_type", "") for form in self.forms]

    # -- authlib's framework hooks ----------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        saved = Token(
            client_id=request.client.client_id,
            access_token=token["access_token"],
            expires_in=token.get("expires_in", self.expires_in),
            scope=token.get("scope", ""),
            refresh_token=token.get("refresh_token"),
            user=request.user,
        )
        self.by_access[saved.access_token] = saved
        if saved.refresh_token:
            self.by_refresh[saved.refresh_token] = saved
        self.auth_methods.append(request.auth_method)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass  # authlib's signals feed framework extensions; there are none here

    def create_oauth2_request(self, request: AiohttpRequest) -> AiohttpRequest:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> web.Response:
        payload = json.dumps(body) if isinstance(body, dict) else body
        return web.Response(status=status, body=payload, headers=dict(headers))

    # -- HTTP -------------------------------------------------------------------------------

    async def token_endpoint(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.forms.append(form)
        await anyio.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="maintenance")
        response: web.Response = self.create_token_response(AiohttpRequest(request, form))
        return response

    async def resource(self, request: web.Request) -> web.Response:
        self.resource_requests += 1
        try:
            token = self.protector.validate_request(scopes=None, request=request)
        except OAuth2Error as err:
            return self.handle_response(*err())
        return web.json_response({"client_id": token.client_id, "scope": token.scope})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token_endpoint)
        app.router.add_get("/resource", self.resource)
        return app
