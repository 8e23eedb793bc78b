"""Authentication for connections: how a request to a third-party API gets its credentials.

A connection's ``[connections.NAME.auth]`` table names a provider by ``type``; the
rest of the table is the provider's ``Options``. The HTTP client calls
:meth:`AuthProvider.apply` before each request and :meth:`AuthProvider.on_unauthorized`
once after a 401, so token refresh lives here and nowhere else. Providers are
registered through the ``integrator_auth`` hook like any plugin's; OAuth2 lives in
:mod:`integrator.http.oauth2`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import aiohttp
import msgspec

from integrator.errors import IntegratorError
from integrator.hookspecs import hookimpl
from integrator.types import Secret

if TYPE_CHECKING:
    from integrator.plugins import Registry

#: RFC 9110 field-name characters (``token``), so a header option cannot smuggle CR/LF.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class AuthError(IntegratorError):
    """Raised when credentials cannot be obtained or were refused.

    ``permanent`` says that retrying cannot help until the configuration changes
    (revoked refresh token, wrong client secret): the provider then refuses at once
    until :meth:`AuthProvider.reset`. ``code`` is the OAuth2 error code, if any;
    ``retry_after`` the delay in seconds the token endpoint asked for, if any.
    Messages never hold a secret or a token.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        self.retry_after = retry_after

    def copy(self) -> AuthError:
        """A fresh instance to raise again, so tracebacks do not pile up on one object."""
        return AuthError(
            self.message, permanent=self.permanent, code=self.code, retry_after=self.retry_after
        )


class TokenStore(Protocol):
    """Durable key/value storage for tokens, so a restart needs no new grant.

    Values are JSON-compatible dicts. The daemon's store provides one; tests may
    use a dict.
    """

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any]) -> None: ...


SessionFactory = Callable[[], aiohttp.ClientSession]


class _Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class AuthProvider:
    """Adds credentials to outgoing requests of one connection.

    One instance serves every request of its connection, concurrently; it is
    built from validated ``Options`` and closed when the connection is.
    """

    Options: ClassVar[type[msgspec.Struct]] = _Options
    #: A one-line description shown by ``integrator plugins``.
    description: ClassVar[str] = ""

    def __init__(
        self,
        options: Any,
        *,
        token_store: TokenStore | None = None,
        session_factory: SessionFactory = aiohttp.ClientSession,
    ) -> None:
        check = getattr(options, "validate", None)
        if callable(check):
            check()  # the config loader calls it too; this covers direct construction
        self.options = options
        self.token_store = token_store
        self.session_factory = session_factory
        #: Told of each token request's outcome (True: a token came back), for metrics
        #: and the ``token_refresh_failing`` alert; providers without tokens never call it.
        self.on_token: Callable[[bool], None] | None = None

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        """Add credentials to an outgoing request's headers or query parameters."""
        raise NotImplementedError

    async def on_unauthorized(self, headers: Mapping[str, str] | None = None) -> bool:
        """Called once after a 401: refresh what can be refreshed.

        ``headers`` are those of the refused request, when the caller has them: they
        tell which credentials were refused. Returns True when retrying the request
        may now succeed. Static credentials cannot change by themselves, so the
        default is False.
        """
        return False

    def reset(self) -> None:
        """Forget cached tokens and any permanent failure (reload, credential rotation)."""

    async def close(self) -> None:
        """Release what the provider holds (an HTTP session)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def set_header(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing any spelling of the same name (headers are case-blind)."""
    lowered = name.lower()
    for key in [k for k in headers if k.lower() == lowered]:
        del headers[key]
    headers[name] = value


# -- static credentials ---------------------------------------------------------------------


class ApiKeyOptions(_Options):
    key: Secret
    #: Header that carries the key; ``X-API-Key`` unless ``query`` is given.
    header: str | None = None
    #: Query parameter that carries the key instead of a header.
    query: str | None = None

    def validate(self) -> None:
        if self.header is not None and self.query is not None:
            raise ValueError("api_key auth takes either 'header' or 'query', not both")
        if self.header is not None and not _HEADER_NAME.match(self.header):
            raise ValueError(f"'header' must be a valid HTTP header name, found {self.header!r}")
        if self.query is not None and not self.query:
            raise ValueError("'query' must name a query parameter")


class ApiKeyAuth(AuthProvider):
    """A static key in a header (``X-API-Key`` by default) or a query parameter."""

    Options = ApiKeyOptions
    description = "static API key in a header or query parameter"
    options: ApiKeyOptions

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        if self.options.query is not None:
            params[self.options.query] = self.options.key.reveal()
        else:
            set_header(headers, self.options.header or "X-API-Key", self.options.key.reveal())

    def __repr__(self) -> str:
        where = f"query={self.options.query!r}" if self.options.query else "header"
        return f"ApiKeyAuth({where}, key=***)"


class BearerOptions(_Options):
    token: Secret


class BearerAuth(AuthProvider):
    """A static bearer token (RFC 6750 ``Authorization: Bearer …``)."""

    Options = BearerOptions
    description = "static bearer token"
    options: BearerOptions

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        set_header(headers, "Authorization", f"Bearer {self.options.token.reveal()}")

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


class BasicOptions(_Options):
    username: str
    password: Secret

    def validate(self) -> None:
        if ":" in self.username:
            raise ValueError("a basic auth 'username' cannot contain ':' (RFC 7617)")


class BasicAuth(AuthProvider):
    """HTTP Basic (RFC 7617), user and password encoded as UTF-8."""

    Options = BasicOptions
    description = "HTTP basic auth"
    options: BasicOptions

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        set_header(
            headers,
            "Authorization",
            basic_credentials(self.options.username, self.options.password.reveal()),
        )

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.options.username!r}, password=***)"


def basic_credentials(username: str, password: str) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


# -- building and registration --------------------------------------------------------------


def build_auth(
    registry: Registry,
    auth: dict[str, Any] | None,
    *,
    token_store: TokenStore | None = None,
    session_factory: SessionFactory = aiohttp.ClientSession,
) -> AuthProvider | None:
    """Build the provider for a validated ``ConnectionConfig.auth`` (None when absent)."""
    if auth is None:
        return None
    registered = registry.get("auth", auth["type"])
    if registered is None:
        raise AuthError(f"unknown auth type {auth['type']!r}", permanent=True)
    provider: AuthProvider = registered.component(
        auth["options"], token_store=token_store, session_factory=session_factory
    )
    return provider


@hookimpl
def integrator_auth(register: Any) -> None:
    register("api_key", ApiKeyAuth)
    register("bearer", BearerAuth)
    register("basic", BasicAuth)
    # By reference: oauth2 (and the HTTP client it uses) is imported when a config uses it.
    register("oauth2", "integrator.http.oauth2:OAuth2Auth")
