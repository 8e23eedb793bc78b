"""Every hook of the plugin API.

A plugin is a module or object with functions decorated by ``@hookimpl`` whose
names match the specifications below; it is found through the ``integrator``
entry-point group (``[project.entry-points.integrator]`` in its pyproject.toml).
Hooks are synchronous: they register classes, and the async work lives on the
objects those classes build. Registration hooks receive a ``register(name,
component)`` callback; the host checks names and refuses duplicates, naming both
plugins. ``component`` is the class or, better, a reference to it,
``"package.module:ClassName"``: its module is then imported only when a config uses
it, so a plugin costs the commands and daemons that do not use it nothing.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("integrator")
hookimpl = pluggy.HookimplMarker("integrator")


# -- components: called once when the registry is built --------------------------------


@hookspec
def integrator_sources(register: Any) -> None:
    """Register source classes (subclasses of :class:`integrator.Source`).

    ``register("timer", TimerSource)`` (or ``register("timer",
    "integrator.builtin.timer:TimerSource")``) makes ``type = "timer"`` usable as a
    route's ``source``. The class's ``Options`` Struct validates the rest of that table.
    """


@hookspec
def integrator_sinks(register: Any) -> None:
    """Register sink classes (subclasses of :class:`integrator.Sink`).

    ``register("file", FileSink)`` makes ``{ type = "file", … }`` usable in a route's
    ``sinks`` list.
    """


@hookspec
def integrator_middleware(register: Any) -> None:
    """Register middleware classes (subclasses of :class:`integrator.Middleware`).

    ``register("drop", DropMiddleware)`` makes ``{ type = "drop" }`` usable in a
    route's ``middleware`` list, and in a sink's own ``middleware`` list.
    """


@hookspec
def integrator_auth(register: Any) -> None:
    """Register authentication providers for ``[connections.NAME.auth]``.

    ``register("oauth2", OAuth2Auth)``: the ``type`` key of an auth table selects one.
    """


@hookspec
def integrator_signatures(register: Any) -> None:
    """Register webhook signature schemes for a webhook source's ``verify`` table.

    ``register("github", GitHubSignature)``: the ``scheme`` key selects one.
    """


@hookspec
def integrator_codecs(register: Any) -> None:
    """Register data formats (JSON, CSV, XML…) that ``convert`` and sinks can use.

    ``register("csv", CsvCodec)``: the codec's name is what config refers to.
    """


@hookspec
def integrator_store_backends(register: Any) -> None:
    """Register durable store backends for ``[store] type = …``.

    ``register("sqlite", SQLiteStore)``: the default embedded store is registered
    this way too.
    """


# -- lifecycle ------------------------------------------------------------------------------


@hookspec
def integrator_startup(daemon: Any) -> Any:
    """Called once the daemon has opened its store, before routes start.

    May return an awaitable, which is awaited. Raising aborts the start with the
    plugin's name in the error.
    """


@hookspec
def integrator_shutdown(daemon: Any) -> Any:
    """Called once after every route has stopped, before the store closes.

    May return an awaitable, which is awaited. Errors are logged, never fatal.
    """


@hookspec
def integrator_dead_letter(entry: Any) -> Any:
    """Called when a message is moved to the dead-letter queue.

    ``entry`` describes it (route, sink, message id, attempts, reason). Use it to
    alert. May return an awaitable. Errors are logged and never stop delivery.
    """
