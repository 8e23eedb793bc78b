"""The ``http`` sink and the ``http_poll`` source, registered by reference.

This module is the plugin and imports neither: the HTTP client, templates,
pagination and schedules are imported only by a daemon whose config uses one.
"""

from __future__ import annotations

import sys
from typing import Any

from integrator.hookspecs import hookimpl


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("http", "integrator.builtin.http_sink:HttpSink")


@hookimpl
def integrator_sources(register: Any) -> None:
    register("http_poll", "integrator.builtin.http_poll:HttpPollSource")


@hookimpl
async def integrator_shutdown(daemon: Any) -> None:
    """Close the daemon's HTTP clients (any component's: a sink, a poll, ``enrich``)."""
    if "integrator.http.client" not in sys.modules:
        return  # nothing imported it, so no client was made
    from integrator.http.client import close_http_clients

    await close_http_clients(daemon)
