"""integrator-postgres: PostgreSQL for integrator.

Registers two sources, ``postgres_poll`` (new rows by an increasing cursor column,
checkpointed after each commit) and ``postgres_listen`` (LISTEN/NOTIFY, not
durable), and the ``postgres`` sink (INSERT or UPSERT, batched in transactions).
"""

from __future__ import annotations

from typing import Any

from integrator import hookimpl
from integrator_postgres.connection import ConnectionOptions, PostgresConnectorError, TLSOptions
from integrator_postgres.listen import ListenOptions, PostgresListenSource
from integrator_postgres.poll import PollOptions, PostgresPollSource
from integrator_postgres.sink import PostgresSink, PostgresSinkOptions

__all__ = [
    "ConnectionOptions",
    "ListenOptions",
    "PollOptions",
    "PostgresConnectorError",
    "PostgresListenSource",
    "PostgresPollSource",
    "PostgresSink",
    "PostgresSinkOptions",
    "TLSOptions",
]


@hookimpl
def integrator_sources(register: Any) -> None:
    register("postgres_poll", PostgresPollSource)
    register("postgres_listen", PostgresListenSource)


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("postgres", PostgresSink)
