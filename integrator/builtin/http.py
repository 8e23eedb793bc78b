"""The ``http`` sink and the ``http_poll`` source, registered by reference.

This module is the plugin and imports neither: the HTTP client, templates,
pagination and schedules are imported only by a daemon whose config uses one.
"""

from __future__ import annotations

from typing import Any

from integrator.hookspecs import hookimpl


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("http", "integrator.builtin.http_sink:HttpSink")


@hookimpl
def integrator_sources(register: Any) -> None:
    register("http_poll", "integrator.builtin.http_poll:HttpPollSource")
