"""The admin API: JSON over HTTP for routes, the DLQ and reloads.

Every handler answers JSON or an RFC 9457 problem; the server checks the bearer
token before any of them runs. Replies go through
:func:`~integrator.admin.responses.json_response`, which scrubs secrets.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
import anyio.to_thread
import msgspec
from aiohttp import web

from integrator.admin.responses import AdminProblem, json_response
from integrator.admin.sampler import Sampler
from integrator.admin.views import route_view, route_views, status_view
from integrator.config import load_config
from integrator.delivery.store import DeadLetter
from integrator.errors import ConfigError, IntegratorError
from integrator.message import Message

if TYPE_CHECKING:
    from integrator.engine.daemon import Daemon
    from integrator.engine.route import RouteRuntime

DLQ_LIMIT_MAX = 1000
REPLAY_CHUNK = 100
#: Who the audit trail names for actions taken through this API.
ACTOR = "admin api"

log = logging.getLogger("integrator.admin")


@runtime_checkable
class Triggerable(Protocol):
    """A source that can be told to poll now (``POST /api/routes/{name}/poll``).

    A polling source implements ``async def trigger(self) -> None``: it should wake
    its schedule and return without waiting for the poll to finish.
    """

    async def trigger(self) -> None: ...


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``{"ids": [1, 2]}``, ``{"route": "orders"}`` or ``{"all": true}``: exactly one."""

    ids: list[int] | None = None
    route: str | None = None
    all: bool = False


def _entry(entry: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": entry.id,
        "route": entry.route,
        "sink": entry.sink,
        "message_id": entry.message.id,
        "trace_id": entry.message.trace_id,
        "attempts": entry.attempts,
        "first_error": entry.first_error,
        "last_error": entry.last_error,
        "first_attempt_at": entry.first_attempt_at,
        "failed_at": entry.failed_at,
    }
    if full:
        message = msgspec.to_builtins(entry.message)
        if isinstance(entry.message.body, bytes):
            message["body"] = entry.message.body.decode("utf-8", "replace")
        data["message"] = message
    return data


class InjectedMessage(msgspec.Struct, forbid_unknown_fields=True):
    """What ``POST /api/routes/{name}/send`` takes (``integrator send``)."""

    body: Any = None
    headers: dict[str, str] = {}
    attributes: dict[str, Any] = {}
    id: str | None = None


class AdminAPI:
    def __init__(self, daemon: Daemon, sampler: Sampler) -> None:
        self.daemon = daemon
        self.sampler = sampler
        self._reload_lock = anyio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/status", self.status),
            web.get("/api/routes", self.list_routes),
            web.get("/api/routes/{name}", self.show_route),
            web.post("/api/routes/{name}/pause", self.pause),
            web.post("/api/routes/{name}/resume", self.resume),
            web.post("/api/routes/{name}/poll", self.poll),
            web.post("/api/routes/{name}/send", self.send),
            web.get("/api/dlq", self.dlq_list),
            web.get("/api/dlq/{id}", self.dlq_show),
            web.post("/api/dlq/replay", self.dlq_replay),
            web.post("/api/reload", self.reload),
        ]

    @property
    def store(self) -> Any:
        assert self.daemon.services is not None
        return self.daemon.services.store

    async def _audit(self, request: web.Request, action: str, details: dict[str, Any]) -> None:
        """Record an action in the audit trail; a store failure is logged, not answered."""
        try:
            await self.store.audit(action, ACTOR, {**details, "remote": request.remote})
        except IntegratorError as err:
            log.error("cannot record %s in the audit trail: %s", action, err)

    # -- routes ------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return json_response(await status_view(self.daemon, self.sampler))

    async def list_routes(self, request: web.Request) -> web.Response:
        await self.sampler.refresh()
        return json_response(route_views(self.daemon, self.sampler))

    async def show_route(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.daemon.config.routes and name not in self.daemon.routes:
            raise AdminProblem(404, f"no route named {name!r}")
        await self.sampler.refresh()
        return json_response(route_view(self.daemon, name, self.sampler))

    def _running(self, request: web.Request) -> RouteRuntime:
        name = request.match_info["name"]
        runtime = self.daemon.routes.get(name)
        if runtime is not None:
            return runtime
        if name in self.daemon.config.routes:
            raise AdminProblem(409, f"route {name!r} is not running (disabled or failed to start)")
        raise AdminProblem(404, f"no route named {name!r}")

    async def pause(self, request: web.Request) -> web.Response:
        runtime = self._running(request)
        runtime.pause()
        await self._audit(request, "route.pause", {"route": runtime.name})
        return json_response(route_view(self.daemon, runtime.name, self.sampler))

    async def resume(self, request: web.Request) -> web.Response:
        runtime = self._running(request)
        runtime.resume()
        await self._audit(request, "route.resume", {"route": runtime.name})
        return json_response(route_view(self.daemon, runtime.name, self.sampler))

    async def send(self, request: web.Request) -> web.Response:
        """Inject a message into a route, as if its source had received it."""
        runtime = self._running(request)
        try:
            given = msgspec.json.decode(await request.read(), type=InjectedMessage)
        except msgspec.DecodeError as err:
            raise AdminProblem(
                400, f"expected {{body, headers?, attributes?, id?}}: {err}"
            ) from err
        message = Message(
            body=given.body,
            headers={k.lower(): v for k, v in given.headers.items()},
            attributes={**given.attributes, "injected_by": ACTOR},
        )
        if given.id:
            message = message.evolve(id=given.id)
        from integrator.engine.route import RouteIntake

        (accepted,) = await RouteIntake(runtime).submit([message])
        await self._audit(request, "route.send", {"route": runtime.name, "id": message.id})
        return json_response({"route": runtime.name, "id": message.id, "accepted": accepted})

    async def poll(self, request: web.Request) -> web.Response:
        runtime = self._running(request)
        if runtime.paused:
            raise AdminProblem(409, f"route {runtime.name!r} is paused: resume it first")
        if not isinstance(runtime.source, Triggerable):
            raise AdminProblem(
                409,
                f"route {runtime.name!r}: a {runtime.config.source.type!r} source cannot be "
                "triggered (only sources with a trigger() method poll on demand)",
            )
        await runtime.source.trigger()
        await self._audit(request, "route.poll", {"route": runtime.name})
        return json_response({"route": runtime.name, "triggered": True}, status=202)

    # -- dead letters ------------------------------------------------------------------------

    async def dlq_list(self, request: web.Request) -> web.Response:
        route = request.query.get("route") or None
        text = request.query.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= DLQ_LIMIT_MAX:
            raise AdminProblem(400, f"limit: expected a number from 1 to {DLQ_LIMIT_MAX}")
        entries = await self.store.dlq_list(route=route, limit=int(text))
        total = await self.store.dlq_count(route)
        return json_response({"total": total, "entries": [_entry(e) for e in entries]})

    async def dlq_show(self, request: web.Request) -> web.Response:
        text = request.match_info["id"]
        entry = await self.store.dlq_get(int(text)) if text.isdigit() else None
        if entry is None:
            raise AdminProblem(404, f"no dead letter with id {text}")
        return json_response(_entry(entry, full=True))

    async def dlq_replay(self, request: web.Request) -> web.Response:
        try:
            wanted = msgspec.json.decode(await request.read(), type=ReplayRequest)
        except msgspec.DecodeError as err:  # ValidationError is a DecodeError
            raise AdminProblem(400, f"invalid replay request: {err}") from err
        if sum((wanted.ids is not None, wanted.route is not None, wanted.all)) != 1:
            raise AdminProblem(400, 'give exactly one of "ids", "route" or "all": true')
        ids = wanted.ids if wanted.ids is not None else await self.store.dlq_ids(wanted.route)
        replayed = 0
        for start in range(0, len(ids), REPLAY_CHUNK):
            replayed += await self.store.dlq_replay(ids[start : start + REPLAY_CHUNK])
        self._wake_all()
        selection = {"ids": wanted.ids, "route": wanted.route, "all": wanted.all}
        await self._audit(request, "dlq.replay", {**selection, "count": replayed})
        return json_response({"replayed": replayed})

    def _wake_all(self) -> None:
        """Replayed work is new work: let idle workers look now, not at their next poll."""
        for runtime in self.daemon.routes.values():
            runtime.chain_wakeup.set()
            for worker in runtime.sinks:
                worker.wakeup.set()

    # -- reload ------------------------------------------------------------------------------

    async def reload(self, request: web.Request) -> web.Response:
        async with self._reload_lock:
            applied = await self.daemon.reload(actor=ACTOR)  # the daemon records it
        if applied:
            return json_response({"applied": True, "problems": []})
        problems = await self._config_problems()
        raise AdminProblem(
            422,
            "the new config is invalid: still running the previous one",
            applied=False,
            problems=problems,
        )

    async def _config_problems(self) -> list[str]:
        try:
            await anyio.to_thread.run_sync(
                load_config, self.daemon.config.path, self.daemon.registry
            )
        except ConfigError as err:
            return err.problems
        return ["the reload failed (see the daemon's log)"]
