"""The shared webhook listener: one aiohttp server for every webhook route.

Routes come and go while the daemon runs (a reload restarts the routes whose
config changed), so the server keeps its own table of paths and dispatches every
request from one handler instead of using aiohttp's router, which is frozen once
the server starts. A path whose route is stopped (paused, restarting, shutting
down) answers 503 with ``Retry-After`` rather than 404, so senders retry instead
of giving up on the endpoint.
"""

from __future__ import annotations

import logging
import math
import os
import re
import ssl
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from aiohttp import web

from integrator.errors import IntegratorError
from integrator.http.problem import HTTPProblem, problem_response

if TYPE_CHECKING:
    from integrator.config import Config, WebhooksConfig

log = logging.getLogger("integrator.webhooks")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_LISTEN = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$")


class ListenerError(IntegratorError):
    """Raised when a listener cannot start: address in use, unreadable certificate."""


def parse_listen(text: str) -> tuple[str | None, int]:
    """``host:port`` or ``[v6]:port`` into (host, port); an empty host means every interface.

    Raises ValueError with the expected shape, for config validation.
    """
    match = _LISTEN.match(text.strip())
    port = int(match["port"]) if match else -1
    if match is None or not 0 <= port <= 65535:
        raise ValueError(
            f"listen: expected 'host:port' such as '127.0.0.1:8080' or '[::1]:8080', found {text!r}"
        )
    host = match["v6"] or match["host"] or None
    return host, port


def normalise_path(path: str) -> str:
    """Paths match with or without a trailing slash."""
    return path.rstrip("/") or "/"


@dataclass(frozen=True)
class Endpoint:
    """One webhook route's path on the listener."""

    path: str
    methods: frozenset[str]
    handler: Handler
    #: The route that serves it, for messages about conflicts.
    owner: str


class WebhookServer:
    """The listener itself: bind in :meth:`run`, dispatch to the registered endpoints."""

    def __init__(self, config: WebhooksConfig, *, shutdown_timeout: float = 30.0) -> None:
        self.config = config
        self.shutdown_timeout = shutdown_timeout
        self._endpoints: dict[str, Endpoint] = {}
        self._parked: set[str] = set()
        #: What the sites are bound to (``(host, port)`` tuples, socket paths), once running.
        self.addresses: list[Any] = []

    # -- endpoints -----------------------------------------------------------------------------

    def add(self, path: str, methods: Iterable[str], handler: Handler, *, owner: str) -> None:
        """Serve ``path``; raise ListenerError if another route already does."""
        key = normalise_path(path)
        current = self._endpoints.get(key)
        if current is not None and current.owner != owner:
            raise ListenerError(
                f"webhook path {path!r} is already served by route {current.owner!r}"
            )
        self._endpoints[key] = Endpoint(key, frozenset(m.upper() for m in methods), handler, owner)
        self._parked.discard(key)

    def remove(self, path: str, handler: Handler) -> None:
        """Stop serving ``path`` (if ``handler`` still serves it); it answers 503 until re-added."""
        key = normalise_path(path)
        current = self._endpoints.get(key)
        if current is not None and current.handler == handler:
            del self._endpoints[key]
            self._parked.add(key)

    @property
    def paths(self) -> dict[str, str]:
        """The paths served now, each with the route that serves it."""
        return {path: endpoint.owner for path, endpoint in self._endpoints.items()}

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The bound TCP port (useful with ``listen = "127.0.0.1:0"``)."""
        for address in self.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        return None

    @property
    def url(self) -> str:
        """The base URL of the TCP listener (for tests); empty without one."""
        if not self.config.listen or self.port is None:
            return ""
        host, _ = parse_listen(self.config.listen)
        host = host if host not in (None, "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    # -- serving -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every configured address, report started, serve until cancelled."""
        server = web.Server(self._dispatch, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        socket_path = self.config.unix_socket
        socket_bound = False
        try:
            tls = _ssl_context(self.config)
            sites: list[web.BaseSite] = []
            if self.config.listen:
                host, port = parse_listen(self.config.listen)
                sites.append(web.TCPSite(runner, host, port, ssl_context=tls))
            if socket_path:
                sites.append(web.UnixSite(runner, socket_path, ssl_context=tls))
            for site in sites:
                try:
                    await site.start()
                except OSError as err:
                    reason = os.strerror(err.errno) if err.errno else str(err)
                    raise ListenerError(
                        f"[webhooks] cannot listen on {site.name}: {reason}"
                    ) from err
                socket_bound = socket_bound or isinstance(site, web.UnixSite)
            self.addresses = list(runner.addresses)
            log.info("webhook listener on %s", ", ".join(map(_describe, self.addresses)))
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
                if socket_path and socket_bound:
                    _remove_socket(socket_path)
            self.addresses = []

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        key = normalise_path(request.path)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if key in self._parked:
                return problem_response(
                    503,
                    "this webhook route is not running at the moment; retry later",
                    instance=request.path,
                    headers={"Retry-After": retry_after(self.config.retry_after)},
                )
            return problem_response(404, "no webhook route at this path", instance=request.path)
        if request.method not in endpoint.methods:
            allowed = ", ".join(sorted(endpoint.methods))
            return problem_response(
                405,
                f"this webhook route accepts {allowed}",
                instance=request.path,
                headers={"Allow": allowed},
            )
        try:
            return await endpoint.handler(request)
        except HTTPProblem as problem:
            return problem.response(instance=request.path)
        except Exception as err:  # a bug in a handler: answer 500, keep serving
            log.error(
                "webhook route %s failed on %s %s: %s: %s",
                endpoint.owner,
                request.method,
                request.path,
                type(err).__name__,
                err,
                exc_info=True,
            )
            return problem_response(
                500, "the webhook could not be processed", instance=request.path
            )


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))


def _describe(address: Any) -> str:
    if isinstance(address, tuple):
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return f"unix:{address}"


def _ssl_context(config: WebhooksConfig) -> ssl.SSLContext | None:
    if not config.tls_cert or not config.tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or str(err)
        raise ListenerError(
            f"[webhooks] tls_cert/tls_key: cannot load {config.tls_cert} and {config.tls_key}: "
            f"{reason}"
        ) from err
    return context


def _remove_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError as err:
        log.warning("cannot remove webhook socket %s: %s", path, err.strerror)


# -- the daemon's side -------------------------------------------------------------------------

WEBHOOK_SOURCE = "webhook"


def wants_listener(config: Config) -> bool:
    """Bind only when some route receives webhooks (enabled or not, so a reload can enable it)."""
    return any(route.source.type == WEBHOOK_SOURCE for route in config.routes.values())


async def start_webhook_listener(
    config: Config, shared: dict[str, Any], tg: anyio.abc.TaskGroup
) -> WebhookServer | None:
    """Start the shared listener in ``tg`` if the config needs one; READY then means bound."""
    if not wants_listener(config):
        return None
    server = WebhookServer(config.webhooks, shutdown_timeout=float(config.daemon.shutdown_timeout))
    shared["webhooks"] = server
    await tg.start(server.run)
    return server
