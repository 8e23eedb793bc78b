"""Test helpers and pytest fixtures for integrator and its plugin authors.

Installed as a pytest plugin (the ``pytest11`` entry point), so a plugin's tests
can use the fixtures without importing anything::

    async def test_my_sink(run_route):
        async with run_route('''
            [routes.demo]
            source = { type = "timer", interval = "10ms", count = 3 }
            sinks = [{ type = "my-sink", url = "..." }]
        ''') as daemon:
            await daemon.wait_delivered("demo", 3)
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from integrator.config import Config, parse_config
from integrator.engine.daemon import Daemon
from integrator.plugins import Registry, build_registry, get_plugin_manager


def require_service(name: str, host: str, port: int) -> None:
    """Skip a test when a local service is down, or fail it under ``CI=true``.

    Plugins' integration tests call this (or use the ``service`` fixture) first.
    """
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as err:
        reason = f"{name} is not reachable at {host}:{port} ({err.strerror or err})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI=true requires every service", pytrace=False)
        pytest.skip(reason)


class RunningDaemon:
    """A daemon running in-process in a test, with helpers to wait for outcomes."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    @property
    def services(self) -> Any:
        return self.daemon.services

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await anyio.sleep(0.01)

    async def wait_delivered(
        self, route: str, count: int, sink: str | None = None, timeout: float = 10.0
    ) -> None:
        def delivered() -> bool:
            stats = self.daemon.services.stats.get(route) if self.daemon.services else None
            if stats is None:
                return False
            sinks = [stats.sinks[sink]] if sink else list(stats.sinks.values())
            return bool(sinks) and all(s.delivered >= count for s in sinks)

        await self.wait_for(delivered, timeout, f"{count} deliveries on route {route}")


def make_registry(*plugins: Any, entrypoints: bool = False) -> tuple[Any, Registry]:
    """A plugin manager with the built-ins, the given extra plugin objects, and
    (optionally) installed entry-point plugins."""
    pm, registry = get_plugin_manager(entrypoints=entrypoints)
    for plugin in plugins:
        pm.register(plugin)
    return pm, build_registry(pm, registry)


@asynccontextmanager
async def running_daemon(
    toml: str, state_dir: Path, *plugins: Any, entrypoints: bool = False
) -> AsyncIterator[RunningDaemon]:
    """Run a daemon on a config given as TOML text until the block exits."""
    pm, registry = make_registry(*plugins, entrypoints=entrypoints)
    text = textwrap.dedent(toml)
    # Appended, so top-level keys (``version = 1``) of the test's text stay at the top.
    if "[daemon]" not in text:
        text += f'\n[daemon]\nstate_dir = "{state_dir}"\nshutdown_timeout = "5s"\n'
    # Tests run side by side: listeners take any free port unless the test says otherwise.
    if "[admin]" not in text:
        text += '\n[admin]\nlisten = "127.0.0.1:0"\n'
    if "[webhooks]" not in text:
        text += '\n[webhooks]\nlisten = "127.0.0.1:0"\n'
    config_path = state_dir / "integrator.toml"
    state_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text)
    config: Config = parse_config(text, config_path, registry)
    daemon = Daemon(config, pm, registry)
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        with anyio.fail_after(10):
            await daemon.ready.wait()
        try:
            yield RunningDaemon(daemon)
        finally:
            daemon.request_stop()


@pytest.fixture
def run_route(tmp_path: Path) -> Callable[..., Any]:
    """Start an in-process daemon on a TOML snippet: ``async with run_route(toml) as d``."""

    def start(toml: str, *plugins: Any, entrypoints: bool = False) -> Any:
        return running_daemon(toml, tmp_path / "state", *plugins, entrypoints=entrypoints)

    return start
