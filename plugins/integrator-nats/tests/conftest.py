"""Fixtures for the NATS plugin's tests: the shared JetStream server and a unique
stream per test (deleted afterwards)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from integrator.testing import require_service

NATS_HOST, NATS_PORT = "127.0.0.1", 4222
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"


@dataclass
class Streams:
    """Unique JetStream streams for one test; every one is deleted afterwards."""

    client: Client
    js: JetStreamContext
    created: list[str]

    async def create(self, prefix: str = "t", **config: Any) -> str:
        """A new stream capturing ``<name>.>``; returns its name (also the subject prefix)."""
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        await self.js.add_stream(name=name, subjects=[f"{name}.>"], **config)
        self.created.append(name)
        return name

    async def publish(self, subject: str, data: bytes, **headers: str) -> int:
        ack = await self.js.publish(subject, data, headers=headers or None)
        return ack.seq

    async def read_all(self, stream: str) -> list[Any]:
        """Every message stored in ``stream``, in order (read with direct gets)."""
        info = await self.js.stream_info(stream)
        return (
            [
                await self.js.get_msg(stream, seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
            if info.state.messages
            else []
        )


@pytest.fixture
async def streams() -> AsyncIterator[Streams]:
    require_service("NATS JetStream", NATS_HOST, NATS_PORT)
    client = await nats.connect(NATS_URL)
    helper = Streams(client, client.jetstream(), [])
    try:
        yield helper
    finally:
        for name in helper.created:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await helper.js.delete_stream(name)
        await client.close()


def _nats_url(port: int = NATS_PORT) -> str:
    return f"nats://{NATS_HOST}:{port}"


@pytest.fixture
def nats_url() -> Callable[..., str]:
    """The URL of the shared server, or of a proxy port in front of it."""
    return _nats_url
