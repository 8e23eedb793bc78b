"""The daemon: open the store, start every route, then wait for signals.

SIGTERM/SIGINT stop intake, let in-flight work finish within ``shutdown_timeout``
and leave the rest in the store. SIGHUP loads the config again: an invalid one is
logged and ignored, a valid one restarts only the routes whose settings changed.
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import logging
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pluggy

from integrator.config import Config, RouteConfig, load_config
from integrator.delivery.store import Store
from integrator.engine.backpressure import Backpressure
from integrator.engine.health import ComponentHealth
from integrator.engine.route import RouteRuntime
from integrator.engine.services import Services
from integrator.errors import ConfigError, IntegratorError, StoreError
from integrator.plugins import Registry
from integrator.systemd import Notifier

log = logging.getLogger("integrator.daemon")


def open_store(config: Config, registry: Registry) -> Store:
    """Build the store backend that ``[store] type`` names."""
    registered = registry.get("store", config.store.type)
    if registered is None:
        raise StoreError(
            f"{config.path}: store.type: unknown store backend {config.store.type!r}: "
            f"{registry.missing_hint('store', config.store.type)}"
        )
    backend = registered.component
    options = None
    options_type = getattr(backend, "Options", None)
    if options_type is not None:
        from integrator.config import convert

        options = convert(config.store.options, options_type)
    store: Store = backend(options, config.state_dir)
    return store


class Daemon:
    def __init__(
        self,
        config: Config,
        pm: pluggy.PluginManager,
        registry: Registry,
        *,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.pm = pm
        self.registry = registry
        self.notifier = notifier or Notifier.from_env()
        self.routes: dict[str, RouteRuntime] = {}
        self.services: Services | None = None
        self._stop = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.ready = anyio.Event()
        self.reloads = 0
        self.last_reload_problems: list[str] = []
        self.started_at = time.time()

    # -- public controls ---------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def healthy(self) -> bool:
        """For the systemd watchdog: the event loop turns and every route task is alive.

        A failing *component* (a broker down, a crashing source) does not count: the
        supervisor is handling it, and a restart of the whole daemon would not help.
        What a restart fixes is a daemon whose route tasks died or whose loop is stuck
        (then this is not even called).
        """
        if self.services is None:
            return False
        return all(not runtime.finished for runtime in self.routes.values())

    # -- main ------------------------------------------------------------------------------

    async def run(self) -> None:
        store = open_store(self.config, self.registry)
        await store.open()
        backpressure = Backpressure(
            store.pending,
            self.config.store.high_water,
            self.config.store.low_water,
        )
        self.services = Services(
            config=self.config,
            store=store,
            pm=self.pm,
            registry=self.registry,
            backpressure=backpressure,
        )
        self._init_shared(self.services)
        try:
            await self._lifecycle("integrator_startup", fatal=True)
            from integrator import __version__

            await self._audit(
                "daemon.start",
                "daemon",
                {
                    "version": __version__,
                    "config": str(self.config.path),
                    "plugin_failures": {i.name: i.error for i in self.registry.failures},
                },
            )
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._handle_signals)
                tg.start_soon(self.notifier.watchdog_loop, lambda: self.healthy)
                await self._start_listeners(tg)
                for route in self.config.routes.values():
                    await self._start_route(route)
                self.ready.set()
                _return_free_memory()
                summary = self._summary()
                self.notifier.ready(status=summary)
                log.info("ready: %s (state in %s)", summary, self.config.state_dir)
                await self._stop.wait()
                self.notifier.stopping()
                log.info(
                    "stopping: draining in-flight work (up to %.0fs)",
                    self.config.daemon.shutdown_timeout,
                )
                await self._stop_routes(list(self.routes))
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._lifecycle("integrator_shutdown", fatal=False)
                await self._close_http_clients()
                await store.close()
            log.info("stopped")

    async def _close_http_clients(self) -> None:
        """Close the HTTP clients any component opened (a sink, a poll, ``enrich``,
        OAuth2): the daemon's own job, whichever plugins are enabled."""
        if self.services is not None and "http" in self.services.shared:  # client.SERVICE
            from integrator.http.client import close_http_clients

            await close_http_clients(self)

    async def _start_listeners(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the shared listeners (webhooks, admin) before the routes that use them."""
        # -- listeners (webhooks, admin) start here --
        from integrator.http.server import start_webhook_listener

        assert self.services is not None
        await start_webhook_listener(self.config, self.services.shared, tg)
        from integrator.admin.server import start_admin_listener

        await start_admin_listener(self, tg)
        from integrator.alerts import start_alerts

        await start_alerts(self, tg)

    def _init_shared(self, services: Services) -> None:
        """Objects shared by every route: rate limiters and breakers keyed by name."""
        from integrator.delivery.breaker import BreakerRegistry
        from integrator.delivery.limits import LimiterRegistry
        from integrator.engine.stats import OPS_STATS, OpsStats

        services.shared.setdefault(OPS_STATS, OpsStats())
        services.shared.setdefault("limiters", LimiterRegistry())
        services.shared.setdefault("breakers", BreakerRegistry())
        services.shared.setdefault("connections", self.config.connections)
        from integrator.transforms.convert import codecs_from_registry

        services.shared.setdefault("codecs", codecs_from_registry(self.registry))
        services.shared["daemon"] = self

    def _summary(self) -> str:
        running = len(self.routes)
        failing = len(self.services.health.unhealthy()) if self.services else 0
        text = f"{running} route{'s' if running != 1 else ''} running"
        return f"{text}, {failing} component(s) failing" if failing else text

    async def _lifecycle(self, hook_name: str, *, fatal: bool) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                result = impl.function(daemon=self)
                if inspect.isawaitable(result):
                    await result
            except Exception as err:
                message = (
                    f"plugin {impl.plugin_name} failed in {hook_name}: {type(err).__name__}: {err}"
                )
                if fatal:
                    raise IntegratorError(message) from err
                log.error("%s", message)

    # -- routes ---------------------------------------------------------------------------

    async def _start_route(self, route: RouteConfig) -> None:
        assert self._tg is not None and self.services is not None
        if not route.enabled:
            log.info("route %s is disabled", route.name)
            return
        try:
            runtime = RouteRuntime(route, self.services)
        except Exception as err:  # a component refusing its options: this route only
            health = self.services.health.component(f"{route.name}/route")
            health.failed(f"{type(err).__name__}: {err}")
            log.error("route %s cannot start: %s: %s", route.name, type(err).__name__, err)
            return
        self.routes[route.name] = runtime
        await self._tg.start(runtime.run)

    async def _stop_routes(self, names: list[str]) -> None:
        timeout = float(self.config.daemon.shutdown_timeout)
        async with anyio.create_task_group() as tg:
            for name in names:
                runtime = self.routes.pop(name, None)
                if runtime is not None:
                    tg.start_soon(runtime.stop, timeout)
        if self.services is not None:
            for name in names:
                self.services.health.forget_route(name)

    # -- signals and reload ---------------------------------------------------------------

    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("received %s", signal.Signals(signum).name)
                    self.request_stop()
                    return

    async def reload(self, path: Path | None = None, actor: str = "signal SIGHUP") -> bool:
        """Load the config again; apply it only if valid. Returns whether it was applied.

        The last refusal's problems stay in ``last_reload_problems`` for the admin API.
        """
        self.notifier.reloading()
        self.reloads += 1
        try:
            source = path or self.config.path
            try:
                new = await anyio.to_thread.run_sync(load_config, source, self.registry)
            except ConfigError as err:
                self.last_reload_problems = err.problems
                log.error("reload refused, still running the previous config:")
                for problem in err.problems:
                    log.error("  %s", problem)
                await self._audit(
                    "config.reload", actor, {"applied": False, "problems": err.problems}
                )
                self._count_reload(False)
                return False
            self.last_reload_problems = []
            summary = await self._apply(new)
            self._count_reload(True)
            await self._audit("config.reload", actor, {"applied": True, **summary})
            return True
        finally:
            self.notifier.ready(status=self._summary())

    def _count_reload(self, applied: bool) -> None:
        if self.services is not None:
            from integrator.engine.stats import ops_stats

            ops_stats(self.services.shared).count_reload(applied)

    async def _audit(self, action: str, actor: str, details: dict[str, Any]) -> None:
        if self.services is None:
            return
        try:
            await self.services.store.audit(action, actor, details)
        except IntegratorError as err:
            log.error("cannot record %s in the audit trail: %s", action, err)

    async def _apply(self, new: Config) -> dict[str, list[str]]:
        old = self.config
        for section in ("daemon", "store", "webhooks", "admin"):
            if getattr(old, section) != getattr(new, section) and section != "daemon":
                log.warning("[%s] changed: takes effect at the next restart", section)
        connections_changed = old.connections != new.connections
        changed = [
            name
            for name, route in old.routes.items()
            if name not in new.routes or new.routes[name].raw != route.raw or connections_changed
        ]
        added = [name for name in new.routes if name not in old.routes or name in changed]
        self.config = new
        if self.services is not None:
            self.services.config = new
            self.services.shared["connections"] = new.connections
            from integrator.http.client import SERVICE, HttpClients

            clients = self.services.shared.get(SERVICE)
            if isinstance(clients, HttpClients):
                clients.reset_auth()  # e.g. after an invalid_grant the operator fixed
        await self._stop_routes([n for n in changed if n in self.routes])
        for name in added:
            if name in new.routes:
                await self._start_route(new.routes[name])
        removed = [n for n in changed if n not in new.routes]
        log.info(
            "reloaded %s: %d route(s) restarted or added, %d removed, %d unchanged",
            new.path,
            len(added),
            len(removed),
            len(new.routes) - len(added),
        )
        return {
            "added": sorted(n for n in added if n not in old.routes),
            "changed": sorted(n for n in changed if n in new.routes),
            "removed": sorted(removed),
        }

    def component_health(self) -> list[ComponentHealth]:
        return list(self.services.health.components.values()) if self.services else []


def run_daemon(config: Config, pm: pluggy.PluginManager, registry: Registry) -> None:
    """Run until stopped by a signal (the ``integrator run`` command)."""
    daemon = Daemon(config, pm, registry)
    backend_options: dict[str, Any] = {}
    try:
        import uvloop  # the optional integrator[fast] extra
    except ImportError:
        log.info("event loop: asyncio (install integrator[fast] for uvloop)")
    else:
        backend_options["use_uvloop"] = True
        log.info("event loop: uvloop %s", uvloop.__version__)
    _tune_gc()
    anyio.run(daemon.run, backend="asyncio", backend_options=backend_options)


def _return_free_memory() -> None:
    """Hand back to the OS the heap that start-up used and freed (config parsing, plugin
    discovery): glibc keeps it otherwise, about 0.7 MB of an idle daemon's RSS. A no-op
    where the C library has no ``malloc_trim`` (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _tune_gc() -> None:
    """Collect garbage less often than CPython's default (every 700 allocations).

    A daemon under load allocates a few dozen objects per message and holds thousands
    for a moment (the store's just-committed messages), so with the defaults they
    reach the oldest generation and full collections run several times a second:
    ~6 % of the CPU of durable ingest in bench/. What start-up made (modules, config,
    plugins) is frozen out of collection altogether.
    """
    gc.collect()  # start-up's own garbage (import-time cycles) is not frozen for good
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
