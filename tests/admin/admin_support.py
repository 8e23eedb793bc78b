"""Helpers for the admin listener's tests: test components and an HTTP client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec

from integrator import DeliveryError, Message, Reject, Secret, Sink, Source, hookimpl
from integrator.components import Intake

ADMIN = '[admin]\nlisten = "127.0.0.1:0"\n'


def quick_stop(tmp_path: Path) -> str:
    """A [daemon] table that does not wait long for a sink that never opens."""
    return f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nshutdown_timeout = "200ms"\n'


class Switch:
    """Shared by a test and its components: whether the flaky sink fails right now."""

    def __init__(self) -> None:
        self.failing = True


class RejectOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    key: Secret | None = None


class Components:
    """A plugin with the components these tests need, built fresh for each test."""

    def __init__(self) -> None:
        self.switch = switch = Switch()

        class RejectingSink(Sink):
            """Refuses every message while the switch is on (dead letters at once)."""

            Options = RejectOptions

            async def deliver(self, message: Message) -> None:
                if switch.failing:
                    key = self.options.key.reveal() if self.options.key else "none"
                    raise Reject(f"remote refused the message (api key {key})")

        class UnavailableSink(Sink):
            """Always fails in a retriable way: a remote that is down."""

            async def deliver(self, message: Message) -> None:
                raise DeliveryError("503 Service Unavailable")

        class BrokenSink(Sink):
            """Cannot even open: the supervisor keeps it failing."""

            async def open(self) -> None:
                raise ConnectionRefusedError("connection refused by 127.0.0.1:9")

        class ManualSource(Source):
            """Emits a message only when triggered (the trigger protocol)."""

            async def run(self, intake: Intake, *, task_status: Any) -> None:
                self._wanted = anyio.Event()
                task_status.started()
                while True:
                    await self._wanted.wait()
                    self._wanted = anyio.Event()
                    await intake.submit([Message(body={"manual": True})])

            async def trigger(self) -> None:
                self._wanted.set()

        self.sinks = {"rejecting": RejectingSink, "unavailable": UnavailableSink}
        self.sinks["broken"] = BrokenSink
        self.sources = {"manual": ManualSource}

    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        for name, sink in self.sinks.items():
            register(name, sink)

    @hookimpl
    def integrator_sources(self, register: Any) -> None:
        for name, source in self.sources.items():
            register(name, source)


def admin_url(daemon: Any) -> str:
    """The bound address of a running daemon's admin listener."""
    return str(daemon.services.shared["admin"].url)


@asynccontextmanager
async def client(token: str | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0]

    def json(self) -> Any:
        return json.loads(self.text)


async def call(
    daemon: Any,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request to a daemon's admin listener over loopback HTTP."""
    async with (
        client(token) as http,
        http.request(method, admin_url(daemon) + path, json=body, headers=headers) as response,
    ):
        return Reply(response.status, dict(response.headers), await response.text())
