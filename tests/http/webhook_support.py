"""Helpers for the webhook receiver tests: a daemon on a loopback port, a client, test plugins.

Imported explicitly by ``test_webhook_*.py`` (not a conftest, so it adds no fixtures
to the other HTTP tests).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from integrator import hookimpl
from integrator.components import Sink
from integrator.delivery.sqlite import SQLiteStore
from integrator.errors import DeliveryError, StoreError
from integrator.http.problem import PROBLEM_CONTENT_TYPE
from integrator.http.server import WebhookServer
from integrator.message import Message
from integrator.testing import RunningDaemon


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def problem(self) -> dict[str, Any]:
        """The RFC 9457 document of an error reply (asserting that it is one)."""
        assert self.headers["Content-Type"] == PROBLEM_CONTENT_TYPE, self.headers
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["status"] == self.status
        return problem


@dataclass
class Receiver:
    """A running daemon with its webhook listener, and a client to call it."""

    daemon: RunningDaemon
    session: aiohttp.ClientSession

    @property
    def server(self) -> WebhookServer:
        server: WebhookServer = self.daemon.services.shared["webhooks"]
        return server

    @property
    def store(self) -> Any:
        return self.daemon.services.store

    def stats(self, route: str = "r") -> Any:
        return self.daemon.services.route_stats(route)

    async def request(
        self, method: str, path: str, body: Any = b"", headers: Mapping[str, str] | None = None
    ) -> Reply:
        """Send a request (a JSON content type unless ``headers`` say otherwise)."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.request(
            method, self.server.url + path, data=body, headers=headers
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def post(
        self,
        path: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        return await self.request(
            "POST", path, body, {"Content-Type": content_type, **(headers or {})}
        )


@asynccontextmanager
async def webhook_daemon(run_route: Any, toml: str, *plugins: Any) -> AsyncIterator[Receiver]:
    """Run ``toml``; ``run_route`` puts the listener on a free loopback port unless told."""
    async with (
        run_route(textwrap.dedent(toml), *plugins) as daemon,
        aiohttp.ClientSession() as session,
    ):
        yield Receiver(daemon, session)


def file_route(out: Path, source: str, *, route: str = "r", extra: str = "") -> str:
    """A route from a webhook source (its TOML table body) to a ``file`` sink."""
    return (
        f"[routes.{route}]\n{extra}\n"
        f'sinks = [{{ type = "file", path = "{out}", fsync = "never" }}]\n'
        f"[routes.{route}.source]\n"
        f'type = "webhook"\n{textwrap.dedent(source)}\n'
    )


def lines(path: Path) -> list[dict[str, Any]]:
    """What a ``file`` sink wrote (format "message"), one dict per line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- test plugins ---------------------------------------------------------------------------


class StuckSink(Sink):
    """A sink whose target is down for the whole test: its deliveries stay in the store."""

    async def deliver(self, message: Message) -> None:
        raise DeliveryError("target down (test)", retry_after=3600)


class FailingStore(SQLiteStore):
    """SQLite that cannot write new messages, as on a full disk."""

    async def enqueue(self, *args: Any, **kwargs: Any) -> list[bool]:
        raise StoreError("cannot write to the store: database or disk is full (test)")


class HelperPlugins:
    """Registered by the tests that need a stuck sink or a failing store."""

    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        register("stuck", StuckSink)

    @hookimpl
    def integrator_store_backends(self, register: Any) -> None:
        register("failing", FailingStore)
