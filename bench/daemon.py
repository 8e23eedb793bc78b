"""Run the real daemon for a scenario: write its config, start it, ask its admin API.

The daemon runs exactly as an operator runs it (``.venv/bin/integrator run -c FILE``)
in its own process, with its state directory under the benchmark's work directory
(on the same disk as the checkout, so fsync costs what it costs there).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import tomli_w

from bench.procs import Child, free_port, integrator_command, start


class Daemon:
    """A daemon process with its ports and state directory."""

    def __init__(self, child: Child, state_dir: Path, admin_port: int, webhook_port: int) -> None:
        self.child = child
        self.state_dir = state_dir
        self.admin_port = admin_port
        self.webhook_port = webhook_port

    @property
    def pid(self) -> int:
        return self.child.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.webhook_port}{path}"

    def route(self, name: str) -> dict[str, Any]:
        """``GET /api/routes/NAME``: counters, depths, sink stats."""
        result: dict[str, Any] = get_json(f"http://127.0.0.1:{self.admin_port}/api/routes/{name}")
        return result

    def stop(self) -> int:
        return self.child.stop(timeout=30)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post(url: str, timeout: float = 10.0) -> None:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def start_daemon(
    name: str,
    routes: dict[str, Any],
    workdir: Path,
    *,
    extra: dict[str, Any] | None = None,
    ready_timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Daemon:
    """Write a config holding ``routes`` (TOML-shaped dicts) and start a daemon on it
    (``env``: added to the daemon's environment)."""
    state_dir = workdir / f"{name}-state"
    admin_port, webhook_port = free_port(), free_port()
    config: dict[str, Any] = {
        "version": 1,
        "daemon": {"state_dir": str(state_dir), "log_level": "info", "shutdown_timeout": "10s"},
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "webhooks": {"listen": f"127.0.0.1:{webhook_port}"},
        "routes": routes,
    }
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    path = workdir / f"{name}.toml"
    path.write_text(tomli_w.dumps(config))
    child = start(
        name,
        [*integrator_command(), "run", "-c", str(path)],
        workdir,
        env=env,
        ready_timeout=ready_timeout,
    )
    return Daemon(child, state_dir, admin_port, webhook_port)


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass; whether it became true."""
    deadline = time.perf_counter() + timeout
    while True:
        if predicate():
            return True
        if time.perf_counter() > deadline:
            return False
        time.sleep(interval)
