"""Fixtures for the Redis plugin's tests: a real Redis, unique keys, an outage-making proxy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from integrator.testing import TcpProxy, require_service

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A client of the local Redis for the test itself (skips when Redis is down)."""
    require_service("redis", REDIS_HOST, REDIS_PORT)
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def key(redis_client: aioredis.Redis) -> AsyncIterator[Callable[..., str]]:
    """A unique key name per call; the keys are deleted after the test."""
    created: list[str] = []

    def make(prefix: str = "stream") -> str:
        created.append(f"integrator-test:{prefix}:{uuid.uuid4().hex[:12]}")
        return created[-1]

    yield make
    if created:
        await redis_client.delete(*created)


@pytest.fixture
def redis_proxy() -> Callable[[], Any]:
    """``async with redis_proxy() as proxy``: a proxy in front of the local Redis.

    (A context manager entered inside the test, not an async fixture, so that its task
    group lives in the test's own task.)
    """
    require_service("redis", REDIS_HOST, REDIS_PORT)
    return lambda: TcpProxy(REDIS_HOST, REDIS_PORT)
