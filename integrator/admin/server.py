"""The admin listener: an aiohttp server on ``[admin] listen``, started by the daemon.

Endpoints::

    GET  /                 the status page (HTML; data from /api/status)
    GET  /healthz          200 while the process and its event loop run
    GET  /readyz           200 when ready, else 503 problem+json with ``reasons``
    GET  /metrics          Prometheus text (bearer token with ``metrics_auth``)
    *    /api/...          the admin API (bearer token when one is configured)

Health checks stay unauthenticated so that systemd, a load balancer or Kubernetes
can probe them; they reveal nothing but the reasons for unreadiness.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from integrator.admin.api import AdminAPI
from integrator.admin.metrics import build_registry
from integrator.admin.page import status_page
from integrator.admin.responses import AdminProblem, json_response, problem
from integrator.admin.sampler import Sampler
from integrator.admin.security import check_exposure, host_is_local, origin_is_same, token_matches
from integrator.admin.views import readiness
from integrator.engine.stats import ops_stats
from integrator.errors import StoreError
from integrator.http.problem import HTTPProblem
from integrator.http.server import ListenerError, parse_listen
from integrator.types import REDACTOR

if TYPE_CHECKING:
    from integrator.config import AdminConfig
    from integrator.engine.daemon import Daemon

log = logging.getLogger("integrator.admin")

MAX_BODY = 64 * 1024
#: How long open connections (a status page's keep-alive) may delay a shutdown.
SHUTDOWN_GRACE = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminServer:
    """Serves one daemon's health, metrics, admin API and status page.

    ``await task_group.start(server.run)`` returns once the socket is bound;
    :attr:`port` then holds the bound port (useful with ``listen = "127.0.0.1:0"``).
    """

    def __init__(self, daemon: Daemon, config: AdminConfig | None = None) -> None:
        self.daemon = daemon
        self.config = config or daemon.config.admin
        check_exposure(self.config)  # the config loader checked too; this guards other callers
        self.host, self._wanted_port = parse_listen(self.config.listen)
        self._token = self.config.token.reveal() if self.config.token else None
        self.sampler = Sampler(daemon)
        self.api = AdminAPI(daemon, self.sampler)
        self.registry = build_registry(daemon, self.sampler)
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = self.host or "0.0.0.0"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.add_routes(
            [
                web.get("/", status_page),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                *self.api.routes(),
            ]
        )
        return app

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._wanted_port)
            try:
                await site.start()
            except OSError as err:
                raise ListenerError(
                    f"[admin] listen = {self.config.listen!r}: cannot listen: {err.strerror or err}"
                ) from err
            self.port = int(runner.addresses[0][1])
            log.info("admin listener on %s", self.url)
            task_status.started()
            await self.sampler.run()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    # -- access control and errors ---------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            self._authorize(request)
            return await handler(request)
        except HTTPProblem as err:
            return err.response(request.path)
        except web.HTTPException as err:  # aiohttp's own 404, 405, 413…
            if err.status < 400:
                raise
            headers = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else None
            return problem(err.status, err.reason, instance=request.path, headers=headers)
        except StoreError as err:
            return problem(503, str(err), instance=request.path)
        except Exception as err:
            log.exception("admin %s %s failed", request.method, request.path)
            detail = REDACTOR.redact(f"{type(err).__name__}: {err}")
            return problem(500, f"internal error: {detail}", instance=request.path)

    def _authorize(self, request: web.Request) -> None:
        path = request.path
        is_api = path.startswith("/api/")
        if self._token is None:
            # Loopback without a token: refuse what only a hostile web page would send.
            if is_api and not host_is_local(request.headers.get("Host"), self.host):
                raise AdminProblem(403, "the admin API answers requests for this host only")
            if is_api and not origin_is_same(request.headers.get("Origin"), request.host):
                raise AdminProblem(403, "cross-site requests to the admin API are refused")
            return
        if (is_api or (path == "/metrics" and self.config.metrics_auth)) and not token_matches(
            request.headers.get("Authorization"), self._token
        ):
            raise AdminProblem(
                401,
                "a valid admin token is required: send 'Authorization: Bearer <[admin] token>'",
                headers={"WWW-Authenticate": 'Bearer realm="integrator admin"'},
            )

    # -- health and metrics ----------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        reasons = await readiness(self.daemon, self.sampler)
        if not reasons:
            return json_response({"status": "ready"})
        detail = f"not ready: {reasons[0]}" + (
            f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        )
        return problem(503, detail, instance=request.path, reasons=reasons)

    async def metrics(self, request: web.Request) -> web.Response:
        await self.sampler.refresh()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})


async def start_admin_listener(daemon: Daemon, tg: anyio.abc.TaskGroup) -> AdminServer | None:
    """Start the admin listener in ``tg`` unless ``[admin] enabled = false``.

    The server is kept in ``services.shared["admin"]`` (tests read its port there).
    """
    assert daemon.services is not None
    ops_stats(daemon.services.shared)  # before the routes copy ``shared`` into their contexts
    if not daemon.config.admin.enabled:
        return None
    server = AdminServer(daemon)
    daemon.services.shared["admin"] = server
    await tg.start(server.run)
    return server
