"""Fixtures for the Redis plugin's tests: a real Redis, unique keys, an outage-making proxy."""

from __future__ import annotations

import inspect
import json
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import redis.asyncio as aioredis

from integrator import Message
from integrator.testing import require_service

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


class TcpProxy:
    """A loopback TCP forwarder whose connections the test can cut and restore.

    While cut, it drops every open connection and closes new ones at once, the way
    a server that went away looks to a client; the machine's real service is never
    touched.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cut_now = False
        self._scopes: set[anyio.CancelScope] = set()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self._handle)

    def cut(self) -> None:
        self.cut_now = True
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.cut_now = False

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            if self.cut_now:
                return
            try:
                upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._pump, client, upstream, scope)
                            tg.start_soon(self._pump, upstream, client, scope)
                    finally:
                        self._scopes.discard(scope)

    @staticmethod
    async def _pump(
        source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            scope.cancel()  # one side failed: drop the connection
        scope.cancel()  # one side closed: close the other too


@asynccontextmanager
async def running_proxy(host: str, port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def redis_proxy() -> Callable[[], Any]:
    """``async with redis_proxy() as proxy``: a proxy in front of the local Redis.

    (A context manager used inside the test, not an async fixture, so that the task
    group lives in the test's own task.)
    """
    require_service("redis", REDIS_HOST, REDIS_PORT)
    return lambda: running_proxy(REDIS_HOST, REDIS_PORT)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The messages a ``file`` sink has written so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def jsonl() -> Callable[[Path], list[dict[str, Any]]]:
    return read_jsonl


class RecordingIntake:
    """An :class:`integrator.Intake` that the test steers: it can hold a commit open,
    fail it, or refuse intake (backpressure), and it records what was committed."""

    def __init__(self) -> None:
        self.committed: list[Message] = []
        self.submitting = anyio.Event()
        self.gate: anyio.Event | None = None
        self.fail: Exception | None = None
        self.open = anyio.Event()
        self.open.set()

    async def submit(self, messages: Sequence[Message]) -> list[bool]:
        self.submitting.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.committed.extend(messages)
        return [True] * len(messages)

    @property
    def accepting(self) -> bool:
        return self.open.is_set()

    async def wait_accepting(self) -> None:
        await self.open.wait()

    async def load_checkpoint(self, key: str) -> Any:
        return None

    async def save_checkpoint(self, key: str, value: Any) -> None:
        return None


@pytest.fixture
def intake() -> RecordingIntake:
    return RecordingIntake()


async def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Poll a plain or async predicate until it holds, or fail naming ``what``."""
    deadline = anyio.current_time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


@pytest.fixture
def until() -> Callable[..., Any]:
    """``await until(predicate, "what")``: poll until true (10 s by default)."""
    return wait_until


class DaemonProcess:
    """``integrator run -c CONFIG`` in a subprocess, its output in a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.process: anyio.abc.Process | None = None

    async def start(self) -> None:
        command = [str(Path(sys.executable).parent / "integrator"), "run", "-c", str(self.config)]
        with self.log.open("ab") as log:
            self.process = await anyio.open_process(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
            with anyio.move_on_after(10):
                return await self.process.wait()
            self.process.kill()
        return await self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
async def daemon_process(tmp_path: Path) -> AsyncIterator[Callable[[Path], DaemonProcess]]:
    """Make daemon subprocesses; any still running at the end of the test is killed."""
    started: list[DaemonProcess] = []

    def make(config: Path) -> DaemonProcess:
        process = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log")
        started.append(process)
        return process

    yield make
    for process in started:
        if process.process is not None and process.process.returncode is None:
            process.process.kill()
            await process.process.wait()
        if process.process is not None:
            await process.process.aclose()


class StoreLock:
    """Holds the daemon's SQLite store locked for writing, so that its commit hangs:
    a message is then received (and not acknowledged) but not yet committed."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest.fixture
def lock_store() -> Callable[[Path], StoreLock]:
    return StoreLock


@pytest.fixture
def run_route(run_route: Callable[..., Any]) -> Callable[..., Any]:
    """The harness's ``run_route``, with the admin listener on a free port, so that
    daemons of tests running side by side never fight over the default one."""

    def start(toml: str, *plugins: Any, **kwargs: Any) -> Any:
        if "[admin]" not in toml:
            toml = '[admin]\nlisten = "127.0.0.1:0"\n' + textwrap.dedent(toml)
        return run_route(toml, *plugins, **kwargs)

    return start
