"""integrator-postgres: PostgreSQL for integrator.

Registers two sources, ``postgres_poll`` (new rows by an increasing cursor column,
checkpointed after each commit) and ``postgres_listen`` (LISTEN/NOTIFY, not
durable), and the ``postgres`` sink (INSERT or UPSERT, batched in transactions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from integrator import hookimpl, lazy_exports

if TYPE_CHECKING:
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

#: Where each public name lives. Imported on first use, so that loading the plugin
#: (every ``integrator`` command does) imports none of its components.
_EXPORTS = {
    "ConnectionOptions": "integrator_postgres.connection",
    "ListenOptions": "integrator_postgres.listen",
    "PollOptions": "integrator_postgres.poll",
    "PostgresConnectorError": "integrator_postgres.connection",
    "PostgresListenSource": "integrator_postgres.listen",
    "PostgresPollSource": "integrator_postgres.poll",
    "PostgresSink": "integrator_postgres.sink",
    "PostgresSinkOptions": "integrator_postgres.sink",
    "TLSOptions": "integrator_postgres.connection",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


@hookimpl
def integrator_sources(register: Any) -> None:
    register("postgres_poll", "integrator_postgres.poll:PostgresPollSource")
    register("postgres_listen", "integrator_postgres.listen:PostgresListenSource")


@hookimpl
def integrator_sinks(register: Any) -> None:
    register("postgres", "integrator_postgres.sink:PostgresSink")
