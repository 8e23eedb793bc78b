"""Fixtures for the AMQP plugin's tests: a real RabbitMQ, unique queues, an outage-making proxy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest

from integrator.testing import TcpProxy, require_service

AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
AMQP_URL = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/"


@pytest.fixture
async def amqp_channel() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel on the local RabbitMQ, for the test to publish and inspect queues."""
    require_service("rabbitmq", AMQP_HOST, AMQP_PORT)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


@pytest.fixture
async def queue_name(
    amqp_channel: aio_pika.abc.AbstractChannel,
) -> AsyncIterator[Callable[[], str]]:
    """A unique queue name per call; the queues are deleted after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(f"integrator-test-{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield make
    for name in names:
        await amqp_channel.queue_delete(name)


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    """Messages ready in a queue (not counting those delivered and unacknowledged)."""
    queue = await channel.declare_queue(name, passive=True)
    return int(queue.declaration_result.message_count or 0)


@pytest.fixture
def depth() -> Callable[..., Any]:
    """``await depth(channel, queue)``: the number of ready messages."""
    return queue_depth


@pytest.fixture
def amqp_proxy() -> Callable[[], Any]:
    """``async with amqp_proxy() as proxy``: a proxy in front of the local RabbitMQ.

    (A context manager entered inside the test, not an async fixture, so that its task
    group lives in the test's own task.)
    """
    require_service("rabbitmq", AMQP_HOST, AMQP_PORT)
    return lambda: TcpProxy(AMQP_HOST, AMQP_PORT)
