"""Fixtures for the PostgreSQL plugin's tests: the shared server's ``test`` database
and unique tables per test (dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from integrator.testing import require_service

PG_HOST, PG_PORT = "127.0.0.1", 5432


def pg_url(port: int = PG_PORT) -> str:
    return f"postgresql://postgres@{PG_HOST}:{port}/test"


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
