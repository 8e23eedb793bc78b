"""The HTTP client of a named connection: one session, one auth provider, shared limits.

A ``[connections.NAME]`` table is used by pollers, sinks and lookups alike, so the
daemon keeps one :class:`HttpClient` per connection in :class:`HttpClients` (the
``"http"`` service): one pool of keep-alive sockets, one auth provider (one OAuth2
token, saved in the store), and one rate limit (``connection:NAME`` in the
:class:`~integrator.delivery.limits.LimiterRegistry`, which a ``rate_limit``
middleware naming that key shares) for everything that talks to that remote. Users
acquire a client and release it; the last release closes it, and the daemon's
shutdown hook closes whatever is left.

Requests never follow redirects and never leave the connection's origin, so
credentials cannot be sent elsewhere; a 401 makes the auth provider refresh once
and the request is sent again once.
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import msgspec
import yarl
from aiohttp import hdrs
from multidict import CIMultiDictProxy

from integrator import __version__
from integrator.config import ConnectionConfig, TLSConfig
from integrator.delivery.limits import LimiterRegistry
from integrator.engine.stats import OPS_STATS, OpsStats
from integrator.errors import ConfigError, IntegratorError
from integrator.http.auth import AuthProvider, build_auth, set_header
from integrator.types import REDACTOR

if TYPE_CHECKING:
    from integrator.components import Context
    from integrator.delivery.store import Store
    from integrator.plugins import Registry

log = logging.getLogger("integrator.http.client")

#: The key of the shared :class:`HttpClients` in ``Context.services``.
SERVICE = "http"
USER_AGENT = f"integrator/{__version__}"
#: The largest response body a client reads (a guard against a runaway endpoint).
MAX_RESPONSE_BODY = 64 * 1024 * 1024


class RequestError(IntegratorError):
    """Raised when a request got no usable HTTP answer.

    Connection refused, TLS failure, timeout, a body too large, or a URL outside the
    connection's origin. ``retriable`` says whether sending it again may help. The
    message names the method and the URL without its query (which may hold a key).
    """

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


@dataclass(frozen=True, repr=False)
class HttpResponse:
    """A response read in full: status, headers, body and the ``Link`` relations."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: yarl.URL
    #: ``rel`` → absolute URL, from the ``Link`` header (RFC 8288).
    links: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body decoded as JSON; raises ``msgspec.DecodeError`` when it is not."""
        return msgspec.json.decode(self.body)

    def text(self, limit: int | None = None) -> str:
        text = self.body.decode("utf-8", errors="replace")
        return text if limit is None else text[:limit]

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, {public_url(self.url)!r})"


def public_url(url: yarl.URL | str) -> str:
    """A URL safe to log: no query, fragment or user info (they may hold credentials)."""
    url = yarl.URL(url) if isinstance(url, str) else url
    return str(url.with_user(None).with_query(None).with_fragment(None))


def ssl_context(tls: TLSConfig, where: str) -> ssl.SSLContext | bool:
    """The TLS settings of a connection: verification on unless turned off.

    ``ca_file`` replaces the system's trust roots (like ``curl --cacert``);
    ``cert_file``/``key_file`` is the client certificate for mutual TLS.
    """
    if tls.verify and tls.ca_file is None and tls.cert_file is None:
        return True  # aiohttp's default: the system's trust roots
    if not tls.verify and tls.cert_file is None:
        return False
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError([f"{where}.tls: cannot load certificates: {reason}"]) from err
    return context


class HttpClient:
    """Sends requests for one connection: its base URL, headers, auth, TLS and limits."""

    def __init__(
        self,
        name: str | None,
        config: ConnectionConfig,
        *,
        auth: AuthProvider | None = None,
        limiters: LimiterRegistry | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.auth = auth
        self.label = f"connection:{name}" if name else "connection:(none)"
        self.base = yarl.URL(config.url) if config.url else None
        self._origin = self.base.origin() if self.base is not None else None
        self.limiters = limiters or LimiterRegistry()
        self._rate = None
        if name and config.rate_limit is not None:
            rate = config.rate_limit
            self.limiters.define_rate(self.label, rate.requests, float(rate.per))
            self._rate = self.limiters.rate(self.label)
        self._capacity = None
        if name and config.max_concurrency:
            self._capacity = self.limiters.capacity(self.label, config.max_concurrency)
        #: Nothing to wait for or to retry with: a request goes straight out.
        self._direct = auth is None and self._rate is None and self._capacity is None
        self._default_headers: dict[str, str] = {"User-Agent": USER_AGENT}
        for key, value in config.headers.items():
            set_header(self._default_headers, key, value)
        where = f"connections.{name}" if name else "connection"
        connector = aiohttp.TCPConnector(
            ssl=ssl_context(config.tls, where), limit=max(100, config.max_concurrency or 0)
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # APIs are stateless; no cookie leaks
            timeout=aiohttp.ClientTimeout(total=float(config.timeout)),
        )
        self.users = 0

    def __repr__(self) -> str:
        return f"HttpClient({self.name!r}, url={public_url(self.config.url)!r})"

    @property
    def closed(self) -> bool:
        return self.session.closed

    def resolve(self, url: str | None = None, path: str | None = None) -> yarl.URL:
        """An absolute ``url``, or ``path`` appended to the connection's URL, or that URL."""
        if url is not None:
            resolved = yarl.URL(url)
            if not resolved.is_absolute():
                raise RequestError(f"URL {public_url(url)!r} is not absolute", retriable=False)
            return resolved
        if self.base is None:
            raise RequestError(f"{self.label} has no 'url' to resolve a path", retriable=False)
        if not path:
            return self.base
        base = str(self.base).rstrip("/")
        return yarl.URL(f"{base}/{path.lstrip('/')}")

    def check_origin(self, url: yarl.URL) -> None:
        """Refuse a URL outside the connection's origin: its credentials must stay home."""
        # A sink without templates sends every request to the base URL itself.
        if self._origin is not None and url is not self.base and url.origin() != self._origin:
            raise RequestError(
                f"refusing {public_url(url)}: outside {self.label} ({self._origin})",
                retriable=False,
            )

    async def request(
        self,
        method: str,
        url: yarl.URL | str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        timeout: float | None = None,
        max_body: int = MAX_RESPONSE_BODY,
    ) -> HttpResponse:
        """Send one request (and again once after a 401 the auth provider fixed).

        Raises :class:`RequestError` when there is no answer, and
        :class:`~integrator.http.auth.AuthError` when credentials cannot be had.
        Any HTTP status is returned, not raised.
        """
        url = yarl.URL(url) if isinstance(url, str) else url
        self.check_origin(url)
        if self._direct:
            all_headers = self._headers(headers)
            return await self._exchange(
                method, url, dict(params or {}), all_headers, data, timeout, max_body
            )
        send = (method, url, params, headers, data, timeout, max_body)
        response, sent_headers = await self._send(*send)
        if (
            response.status == 401
            and self.auth is not None
            and await self.auth.on_unauthorized(sent_headers)
        ):
            log.info("%s: 401 from %s; retrying with new credentials", self.label, public_url(url))
            response, _ = await self._send(*send)
        return response

    async def _send(
        self,
        method: str,
        url: yarl.URL,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        data: bytes | None,
        timeout: float | None,
        max_body: int,
    ) -> tuple[HttpResponse, dict[str, str]]:
        all_headers = self._headers(headers)
        all_params = dict(params or {})
        if self.auth is not None:
            await self.auth.apply(all_headers, all_params)
        await self._wait_for_rate()
        borrower = object()
        if self._capacity is not None:
            await self._capacity.acquire_on_behalf_of(borrower)
        try:
            return await self._exchange(
                method, url, all_params, all_headers, data, timeout, max_body
            ), all_headers
        finally:
            if self._capacity is not None:
                self._capacity.release_on_behalf_of(borrower)

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        """The connection's headers (and our User-Agent) with the request's over them."""
        merged = dict(self._default_headers)
        for key, value in (headers or {}).items():
            set_header(merged, key, value)
        return merged

    async def _wait_for_rate(self) -> None:
        if self._rate is None:
            return
        if self._rate.has_capacity():
            await self._rate.acquire()
            return
        started = anyio.current_time()
        await self._rate.acquire()
        self.limiters.record_wait(self.label, anyio.current_time() - started)

    async def _exchange(
        self,
        method: str,
        url: yarl.URL,
        params: dict[str, str],
        headers: dict[str, str],
        data: bytes | None,
        timeout: float | None,
        max_body: int,
    ) -> HttpResponse:
        total = float(self.config.timeout) if timeout is None else float(timeout)
        started = time.monotonic()
        try:
            async with self.session.request(
                method,
                url,
                params=params or None,
                headers=headers,
                data=data,
                timeout=_timeout(total),
                allow_redirects=False,
            ) as response:
                body = await _read_body(response, max_body, method, url)
                links = (
                    {str(rel): str(link["url"]) for rel, link in response.links.items()}
                    if "Link" in response.headers
                    else {}
                )
                result = HttpResponse(response.status, response.headers, body, response.url, links)
        except TimeoutError as err:
            raise RequestError(f"{_where(method, url)}: no answer within {total:g}s") from err
        except aiohttp.ClientSSLError as err:
            raise RequestError(f"{_where(method, url)}: TLS failed: {_reason(err)}") from err
        except aiohttp.ClientError as err:
            raise RequestError(f"{_where(method, url)}: {_reason(err)}") from err
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: %s -> %d in %.0fms",
                self.label,
                _where(method, url),
                result.status,
                (time.monotonic() - started) * 1000,
            )
        return result

    async def close(self) -> None:
        if not self.session.closed:
            await self.session.close()
        if self.auth is not None:
            await self.auth.close()


async def _read_body(
    response: aiohttp.ClientResponse, limit: int, method: str, url: yarl.URL
) -> bytes:
    length = response.content_length
    # Content-Length counts the bytes sent; a compressed body is longer once aiohttp
    # has decoded it, so only an uncompressed one may be read in one call.
    encoded = response.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity"
    if length is not None and length <= limit and not encoded:
        return await response.read()  # aiohttp stops at Content-Length
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RequestError(
                f"{_where(method, url)}: response body over {limit} bytes", retriable=False
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _where(method: str, url: yarl.URL) -> str:
    """A request named for errors and logs (built only when one is written)."""
    return f"{method} {public_url(url)}"


@functools.lru_cache(maxsize=64)
def _timeout(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total)


def _reason(err: BaseException) -> str:
    """A one-line cause, scrubbed of any known secret."""
    text = str(err) or type(err).__name__
    return REDACTOR.redact(text.splitlines()[0] if text else text)


class StoreTokens:
    """An auth provider's :class:`~integrator.http.auth.TokenStore` in the durable store."""

    PREFIX = "auth:"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> dict[str, Any] | None:
        value = await self.store.get_state(self.PREFIX + key)
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        await self.store.set_state(self.PREFIX + key, value)


class HttpClients:
    """Every connection's client in one daemon, shared by reference count."""

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        store: Store | None = None,
        limiters: LimiterRegistry | None = None,
        ops: OpsStats | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.limiters = limiters or LimiterRegistry()
        self.ops = ops  # where token refreshes are counted
        self._clients: dict[str, HttpClient] = {}

    def reset_auth(self) -> None:
        """Forget refused credentials: a reload may have fixed them at the provider."""
        for client in self._clients.values():
            if client.auth is not None:
                client.auth.reset()

    async def acquire(self, name: str | None, config: ConnectionConfig | None = None) -> HttpClient:
        """The client of connection ``name`` (None: no connection, default settings).

        A client whose settings changed (a reload) is replaced for new users; its old
        users keep it until they release it.
        """
        config = config or ConnectionConfig()
        key = name or ""
        client = self._clients.get(key)
        if client is None or client.closed or client.config != config:
            client = self._clients[key] = HttpClient(
                name, config, auth=self._auth(name, config), limiters=self.limiters
            )
        client.users += 1
        return client

    async def release(self, client: HttpClient) -> None:
        """Give a client back; the last user closes it.

        Shielded from cancellation: components release in their cleanup, which often
        runs because their task is being cancelled.
        """
        client.users -= 1
        if client.users > 0:
            return
        key = client.name or ""
        if self._clients.get(key) is client:
            del self._clients[key]
        with anyio.CancelScope(shield=True):
            await client.close()

    async def close(self) -> None:
        """Close every client (daemon shutdown), whoever still holds one."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def _auth(self, name: str | None, config: ConnectionConfig) -> AuthProvider | None:
        if config.auth is None:
            return None
        if self.registry is None:
            raise ConfigError([f"connections.{name}.auth: no plugin registry to build it from"])
        tokens = StoreTokens(self.store) if self.store is not None else None
        tls = ssl_context(config.tls, f"connections.{name}")

        def token_session() -> aiohttp.ClientSession:
            # The token endpoint trusts what the connection trusts (a private CA) and
            # gets its client certificate (RFC 8705 mutual-TLS client authentication).
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))

        provider = build_auth(
            self.registry, config.auth, token_store=tokens, session_factory=token_session
        )
        if provider is not None and self.ops is not None:
            refreshes = self.ops.token_refreshes
            label = name or "(no connection)"

            def count(ok: bool) -> None:
                refreshes[(label, "ok" if ok else "error")] += 1

            provider.on_token = count
        return provider


def connection_config(context: Context, name: str) -> ConnectionConfig:
    """The settings of connection ``name``; ConfigError naming the known ones if absent."""
    connections = context.services.get("connections")
    if connections is None and context.config is not None:
        connections = context.config.connections
    connections = connections or {}
    if name not in connections:
        known = ", ".join(sorted(connections)) or "none"
        raise ConfigError(
            [f"route {context.route!r}: unknown connection {name!r}; known connections: {known}"]
        )
    config: ConnectionConfig = connections[name]
    return config


def http_clients(context: Context) -> HttpClients:
    """The daemon's :class:`HttpClients`, created on first use.

    ``context.services`` is a per-component copy of the daemon's shared services,
    so the registry is kept in the daemon's own dict when there is a daemon.
    """
    services = context.services
    found = services.get(SERVICE)
    if isinstance(found, HttpClients):
        return found
    daemon = services.get("daemon")
    owner = getattr(daemon, "services", None)
    shared: dict[str, Any] = owner.shared if owner is not None else services
    clients = shared.get(SERVICE)
    if not isinstance(clients, HttpClients):
        limiters = services.get("limiters")
        ops = shared.get(OPS_STATS)
        clients = shared[SERVICE] = HttpClients(
            registry=getattr(daemon, "registry", None) or services.get("registry"),
            store=services.get("store"),
            limiters=limiters if isinstance(limiters, LimiterRegistry) else None,
            ops=ops if isinstance(ops, OpsStats) else None,
        )
    services[SERVICE] = clients
    return clients


async def close_http_clients(daemon: Any) -> None:
    """Close the daemon's clients (its shutdown hook); safe to call twice."""
    owner = getattr(daemon, "services", None)
    if owner is None:
        return
    clients = owner.shared.pop(SERVICE, None)
    if isinstance(clients, HttpClients):
        await clients.close()
