"""Fixtures for the PostgreSQL plugin's tests: the shared server's ``test`` database,
unique tables per test (dropped afterwards), and a TCP proxy to make outages with."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from integrator.testing import require_service

PG_HOST, PG_PORT = "127.0.0.1", 5432


def pg_url(port: int = PG_PORT) -> str:
    return f"postgresql://postgres@{PG_HOST}:{port}/test"


def _load_helper(name: str) -> Any:
    """Test helpers beside this file (tests run with --import-mode=importlib, so a
    test module cannot import its neighbours by name)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def tcp_proxy() -> Any:
    """The :class:`TcpProxy` class: ``async with tcp_proxy(host, port) as proxy``."""
    return _load_helper("postgres_tcp_proxy").TcpProxy


@pytest.fixture
def postgres_url() -> Callable[..., str]:
    """The URL of the ``test`` database, directly or through a proxy port."""
    return pg_url


@dataclass
class Database:
    """A connection to the ``test`` database and the tables a test made there."""

    conn: asyncpg.Connection
    tables: list[str] = field(default_factory=list)

    async def table(self, columns: str, prefix: str = "t") -> str:
        """Create a uniquely named table with the given column definitions."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        await self.conn.execute(f"CREATE TABLE {name} ({columns})")
        self.tables.append(name)
        return name

    async def rows(self, table: str, order: str = "1") -> list[dict[str, Any]]:
        return [dict(r) for r in await self.conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")]


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    conn = await asyncpg.connect(pg_url())
    database = Database(conn)
    try:
        yield database
    finally:
        for table in database.tables:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


Check = Callable[[], Awaitable[bool]]


async def _eventually(check: Check, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(async_check, timeout, what)``: poll a database-side condition."""
    return _eventually
