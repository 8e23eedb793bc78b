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

Beside the in-process daemon, the package has the helpers that connector tests
need again and again, each in its own module and importable from here:

* :class:`TcpProxy` (``proxy``): a loopback proxy to cut, freeze and restore, to
  make outages without stopping a shared server;
* :class:`RecordingIntake` (``intake``, also the ``intake`` fixture): an intake the
  test steers, for acknowledge-after-commit and backpressure tests;
* :class:`DaemonProcess`, :class:`StoreLock`, :func:`daemon_config` (``process``,
  and the ``daemon_process`` fixture): ``integrator run`` as a subprocess, for
  ``kill -9`` tests;
* :func:`eventually` (``waiting``): poll a plain or async condition, or fail
  naming it;
* :func:`read_jsonl`: what a ``file`` sink has written so far.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from integrator.config import Config, parse_config
from integrator.engine.daemon import Daemon
from integrator.plugins import Registry, build_registry, get_plugin_manager
from integrator.testing.intake import RecordingIntake
from integrator.testing.process import DaemonProcess, StoreLock, daemon_config, store_settled
from integrator.testing.proxy import TcpProxy
from integrator.testing.waiting import TimedOut, eventually

# The fixtures (run_route, intake, daemon_process) reach tests through the plugin.
__all__ = [
    "DaemonProcess",
    "RecordingIntake",
    "RunningDaemon",
    "StoreLock",
    "TcpProxy",
    "TimedOut",
    "daemon_config",
    "eventually",
    "make_registry",
    "read_jsonl",
    "require_service",
    "running_daemon",
    "store_settled",
]


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
        await eventually(predicate, what, timeout=timeout, interval=0.01)

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
    # State in state_dir, listeners on free ports, unless the test's text says otherwise.
    text = daemon_config(toml, state_dir)
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The messages a ``file`` sink has written to ``path`` so far (none if no file yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def intake() -> RecordingIntake:
    """A fresh :class:`RecordingIntake` to run a source against."""
    return RecordingIntake()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[[Path], DaemonProcess]]:
    """Start ``integrator run -c CONFIG`` subprocesses: ``daemon = daemon_process(config)``.

    Each logs to its own file in ``tmp_path``; any still running after the test is killed.
    """
    started: list[DaemonProcess] = []

    def start(config: Path) -> DaemonProcess:
        process = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.close()
