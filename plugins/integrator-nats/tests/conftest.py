"""Fixtures for the NATS plugin's tests: the shared JetStream server, a unique stream
per test (deleted afterwards), and a TCP proxy to make outages with."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from integrator.testing import require_service

NATS_HOST, NATS_PORT = "127.0.0.1", 4222
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"


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
    return _load_helper("nats_tcp_proxy").TcpProxy


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


Check = Callable[[], Awaitable[bool]]


async def _eventually(check: Check, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(async_check, timeout, what)``: poll a server-side condition."""
    return _eventually
