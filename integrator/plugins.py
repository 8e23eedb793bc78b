"""The plugin manager: built-in plugins plus those found through entry points.

Nothing is discovered at import time. :func:`get_plugin_manager` builds a fresh
manager each time it is called (one per daemon, one per test), and
:func:`build_registry` asks every plugin, one by one, what it provides, so that a
broken plugin is reported by name and never takes the others down.

A component may be registered by reference, ``"package.module:ClassName"``: its
module is imported only when something reads :attr:`Registered.component` (the
config loader, for the components a config uses), so loading every plugin costs
an ``integrator`` command or an idle daemon only the plugins' small hook modules.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from integrator import hookspecs
from integrator.components import Middleware, Sink, Source
from integrator.errors import PluginError

log = logging.getLogger("integrator.plugins")

GROUP = "integrator"

#: Built-in plugins, registered through the same hooks as third-party ones. Each is a
#: small module: what not every daemon needs it registers by reference.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "integrator.builtin.timer",
    "integrator.builtin.stdout",
    "integrator.builtin.file",
    "integrator.builtin.webhook",
    "integrator.builtin.basic",
    "integrator.transforms.plugin",
    "integrator.delivery.sqlite",
    "integrator.delivery.limits",
    "integrator.http.signatures",
    "integrator.http.auth",
    "integrator.builtin.http",
)

#: The hook that registers each kind of component, and the base class it must extend.
KINDS: dict[str, tuple[str, type | None]] = {
    "source": ("integrator_sources", Source),
    "sink": ("integrator_sinks", Sink),
    "middleware": ("integrator_middleware", Middleware),
    "auth": ("integrator_auth", None),
    "signature": ("integrator_signatures", None),
    "codec": ("integrator_codecs", None),
    "store": ("integrator_store_backends", None),
}

#: Which first-party distribution provides a component, for "did you install…?" hints.
KNOWN_PROVIDERS: dict[str, str] = {
    "redis_stream": "integrator-redis",
    "redis_publish": "integrator-redis",
    "amqp": "integrator-amqp",
    "mqtt": "integrator-mqtt",
    "nats": "integrator-nats",
    "postgres": "integrator-postgres",
    "postgres_poll": "integrator-postgres",
    "postgres_listen": "integrator-postgres",
}

_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")
#: ``package.module:ClassName``: a component registered by reference.
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class ComponentUnavailable(PluginError):
    """A component registered by reference cannot be imported, or is not of its kind.

    Raised when the component is first used (usually while a config is loaded),
    never while plugins load: its text names the plugin, the kind, the name and the
    cause, and says what to do.
    """


@dataclass
class PluginInfo:
    """What ``integrator plugins`` shows for one plugin."""

    name: str
    version: str = ""
    builtin: bool = False
    status: str = "loaded"  # loaded | failed | blocked
    error: str = ""
    components: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registered:
    """One component of one plugin, as ``register(name, component)`` gave it."""

    name: str
    kind: str
    plugin: str
    #: ``"package.module:ClassName"`` when registered by reference, else empty.
    reference: str = ""
    builtin: bool = False
    _component: Any = field(default=None, repr=False)

    @property
    def component(self) -> Any:
        """The class; one registered by reference is imported (and checked) on first use."""
        if self._component is None and self.reference:
            self._component = _resolve(self)
        return self._component


@dataclass
class Registry:
    """Every component provided by the loaded plugins, by kind and name."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    components: dict[str, dict[str, Registered]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    def get(self, kind: str, name: str) -> Registered | None:
        return self.components[kind].get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    @property
    def failures(self) -> list[PluginInfo]:
        return [info for info in self.plugins.values() if info.status == "failed"]

    def missing_hint(self, kind: str, name: str) -> str:
        """Explain where a missing component would come from."""
        known = ", ".join(self.names(kind)) or "none"
        for info in self.failures:
            if name == info.name or name.startswith(info.name):
                return (
                    f"plugin {info.name!r} would provide it but failed to load: {info.error}; "
                    f"known {kind} types: {known}"
                )
        provider = KNOWN_PROVIDERS.get(name)
        if provider:
            return f"install it with 'pip install {provider}'; known {kind} types: {known}"
        return f"no installed plugin provides it; known {kind} types: {known}"


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def get_plugin_manager(
    *, builtins: bool = True, entrypoints: bool = True, registry: Registry | None = None
) -> tuple[pluggy.PluginManager, Registry]:
    """Build a plugin manager with the built-ins and the installed plugins.

    ``INTEGRATOR_DISABLE_PLUGINS`` (comma-separated names) blocks plugins, built-in
    or not; ``INTEGRATOR_LOAD_PLUGINS`` loads only the named entry-point plugins;
    ``INTEGRATOR_TRACE_HOOKS=1`` logs every hook call.
    """
    registry = registry or Registry()
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    blocked = _env_list("INTEGRATOR_DISABLE_PLUGINS") or set()
    pinned = _env_list("INTEGRATOR_LOAD_PLUGINS")

    if builtins:
        for module_name in DEFAULT_PLUGINS:
            info = PluginInfo(name=module_name, builtin=True)
            registry.plugins[module_name] = info
            if module_name in blocked or module_name.rsplit(".", 1)[-1] in blocked:
                info.status = "blocked"
                pm.set_blocked(module_name)
                continue
            try:
                module = importlib.import_module(module_name)
            except Exception as err:  # e.g. an optional dependency missing: report, go on
                info.status = "failed"
                info.error = f"{type(err).__name__}: {err}"
                log.error("built-in plugin %s failed to load: %s", module_name, info.error)
                continue
            pm.register(module, name=module_name)

    if entrypoints:
        for ep in entry_points(group=GROUP):
            info = PluginInfo(name=ep.name, version=ep.dist.version if ep.dist else "")
            if ep.dist is not None:
                info.version = ep.dist.version
            registry.plugins[ep.name] = info
            if ep.name in blocked or (pinned is not None and ep.name not in pinned):
                info.status = "blocked"
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as err:  # any import-time failure is the plugin's, not ours
                info.status = "failed"
                info.error = f"{type(err).__name__}: {err}"
                log.warning("plugin %s failed to load: %s", ep.name, info.error)

    if builtins and entrypoints:
        _warn_unknown_blocked(blocked, registry)
    if os.environ.get("INTEGRATOR_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda text: log.debug("hook: %s", text.rstrip()))
        pm.enable_tracing()
    return pm, registry


def _warn_unknown_blocked(blocked: set[str], registry: Registry) -> None:
    """A name in INTEGRATOR_DISABLE_PLUGINS that matches no plugin blocks nothing: say so."""
    known = set(registry.plugins) | {name.rsplit(".", 1)[-1] for name in registry.plugins}
    for name in sorted(blocked - known):
        log.warning(
            "INTEGRATOR_DISABLE_PLUGINS names %r, which is no plugin, so it blocks nothing; "
            "`integrator plugins` lists their names (http_sink and http_poll are now "
            "the built-in plugin 'http')",
            name,
        )


def build_registry(pm: pluggy.PluginManager, registry: Registry | None = None) -> Registry:
    """Ask each plugin, one at a time, for its components.

    Each hook implementation is called on its own with a ``register`` callback that
    knows which plugin is calling, so errors and duplicates name the plugin.
    """
    registry = registry or Registry()
    for kind, (hook_name, base) in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order
            plugin = impl.plugin_name
            info = registry.plugins.setdefault(plugin, PluginInfo(name=plugin))
            register = _make_register(registry, kind, base, plugin)
            try:
                impl.function(register=register)
            except Exception as err:
                info.status = "failed"
                info.error = f"{hook_name}: {type(err).__name__}: {err}"
                log.warning("plugin %s failed in %s: %s", plugin, hook_name, err)
    return registry


def _make_register(registry: Registry, kind: str, base: type | None, plugin: str) -> Any:
    def register(name: str, component: Any) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"invalid {kind} name {name!r}: use lower-case letters, digits, '-' and '_'"
            )
        if isinstance(component, str):
            if not _REFERENCE.match(component):
                raise ValueError(
                    f"invalid reference {component!r} for {kind} {name!r}: "
                    "use 'package.module:ClassName'"
                )
        elif base is not None and not _extends(component, base):
            raise TypeError(f"{kind} {name!r} must be a subclass of integrator.{base.__name__}")
        existing = registry.components[kind].get(name)
        if existing is not None and existing.plugin != plugin:
            raise ValueError(f"{kind} {name!r} is already provided by plugin {existing.plugin!r}")
        info = registry.plugins.setdefault(plugin, PluginInfo(name=plugin))
        if isinstance(component, str):
            entry = Registered(name, kind, plugin, reference=component, builtin=info.builtin)
        else:
            entry = Registered(name, kind, plugin, builtin=info.builtin, _component=component)
        registry.components[kind][name] = entry
        info.components.setdefault(kind, []).append(name)

    return register


def _extends(component: Any, base: type) -> bool:
    return isinstance(component, type) and issubclass(component, base)


def _resolve(entry: Registered) -> Any:
    """Import the class a reference names and check it as ``register`` checks classes."""
    module_name, _, attribute = entry.reference.partition(":")
    try:
        component: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            component = getattr(component, part)
    except Exception as err:  # whatever the import raised is the plugin's problem
        raise ComponentUnavailable(
            _unavailable(entry, f"{entry.reference}: {type(err).__name__}: {err}")
        ) from err
    base = KINDS[entry.kind][1]
    if base is not None and not _extends(component, base):
        cause = f"{entry.reference} is not a subclass of integrator.{base.__name__}"
        raise ComponentUnavailable(_unavailable(entry, cause))
    return component


def _unavailable(entry: Registered, cause: str) -> str:
    if entry.builtin:
        fix = "reinstall integrator"
    else:
        fix = (
            f"reinstall plugin {entry.plugin!r}, or pin a version of it that works with this "
            f"integrator, or start without it: INTEGRATOR_DISABLE_PLUGINS={entry.plugin}"
        )
    return (
        f"{entry.kind} {entry.name!r} of plugin {entry.plugin!r} cannot be loaded: {cause}; {fix}"
    )


def load_plugins() -> tuple[pluggy.PluginManager, Registry]:
    """The manager and the registry of everything installed: what the CLI uses."""
    pm, registry = get_plugin_manager()
    return pm, build_registry(pm, registry)
