"""The daemon as operators run it: a real subprocess, real signals."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from core_support import integrator_command


class Daemon:
    """``integrator run`` in a subprocess, with its log captured to a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self.log_file = log.open("w")
        self.proc = subprocess.Popen(
            integrator_command("run", "-c", str(config)),
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
            cwd=config.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log after {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


@pytest.fixture
def daemon_factory(tmp_path: Path):
    started: list[Daemon] = []

    def start(config_text: str) -> Daemon:
        config = tmp_path / "integrator.toml"
        config.write_text(config_text)
        daemon = Daemon(config, tmp_path / f"daemon-{len(started)}.log")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def config(tmp_path: Path, interval: str = "20ms", extra: str = "") -> str:
    # A free admin port: a daemon already running on this machine (an operator's,
    # `make run`) holds the default one.
    return f"""
[daemon]
state_dir = "{tmp_path / "state"}"
shutdown_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[routes.ticks]
sinks = [{{ type = "file", path = "{tmp_path / "out.jsonl"}" }}]
[routes.ticks.source]
type = "timer"
interval = "{interval}"
{extra}
"""


def delivered(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_drains_and_exits_zero(tmp_path: Path, daemon_factory) -> None:
    daemon = daemon_factory(config(tmp_path))
    daemon.wait_for_log("ready: 1 route running")
    deadline = time.monotonic() + 10
    while len(delivered(tmp_path / "out.jsonl")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.stop(signal.SIGTERM) == 0
    log = daemon.log()
    assert "received SIGTERM" in log
    assert "stopped" in log
    assert "Traceback" not in log


def test_the_log_names_the_event_loop_uvloop_when_installed(tmp_path: Path, daemon_factory) -> None:
    daemon = daemon_factory(config(tmp_path))
    daemon.wait_for_log("ready:")
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"event loop: {expected}" in daemon.log()


def test_sigint_stops_cleanly_too(tmp_path: Path, daemon_factory) -> None:
    daemon = daemon_factory(config(tmp_path))
    daemon.wait_for_log("ready:")
    assert daemon.stop(signal.SIGINT) == 0


def test_sighup_with_a_valid_config_restarts_only_changed_routes(
    tmp_path: Path, daemon_factory
) -> None:
    daemon = daemon_factory(config(tmp_path))
    daemon.wait_for_log("ready: 1 route running")
    other = tmp_path / "other.jsonl"
    (tmp_path / "integrator.toml").write_text(
        config(tmp_path)
        + f"""
[routes.added]
sinks = [{{ type = "file", path = "{other}" }}]
[routes.added.source]
type = "timer"
interval = "20ms"
"""
    )
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for_log("reloaded")
    assert "1 route(s) restarted or added, 0 removed, 1 unchanged" in daemon.log()
    deadline = time.monotonic() + 10
    while not delivered(other) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delivered(other), "the added route delivers"
    assert daemon.stop() == 0


def test_sighup_with_an_invalid_config_keeps_the_old_one_running(
    tmp_path: Path, daemon_factory
) -> None:
    out = tmp_path / "out.jsonl"
    daemon = daemon_factory(config(tmp_path))
    daemon.wait_for_log("ready: 1 route running")
    (tmp_path / "integrator.toml").write_text(config(tmp_path, interval="soon"))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for_log("reload refused")
    daemon.wait_for_log("routes.ticks.source.interval: expected a duration")
    before = len(delivered(out))
    time.sleep(0.5)
    assert len(delivered(out)) > before, "the old config keeps running"
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
    audit = subprocess.run(
        integrator_command(
            "audit", "--state-dir", str(tmp_path / "state"), "--action", "config.reload", "--json"
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    (entry,) = json.loads(audit.stdout)
    assert entry["actor"] == "signal SIGHUP"
    assert entry["details"]["applied"] is False
    assert any("routes.ticks.source.interval" in p for p in entry["details"]["problems"])


def test_run_refuses_an_invalid_config_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config(tmp_path).replace('type = "timer"', 'type = "nope"'))
    result = subprocess.run(
        integrator_command("run", "-c", str(path)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "routes.ticks.source.type: unknown source type 'nope'" in result.stderr


def test_check_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config(tmp_path, interval="soon").replace('type = "file"', 'type = "fiel"'))
    result = subprocess.run(
        integrator_command("check", "-c", str(path)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stderr


def test_check_exits_0_for_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(config(tmp_path))
    result = subprocess.run(
        integrator_command("check", "-c", str(path)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "ok (1 route)" in result.stdout


def test_version_and_help(tmp_path: Path) -> None:
    version = subprocess.run(
        integrator_command("--version"), capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("integrator ")
    for command in ("run", "check", "plugins", "dlq"):
        result = subprocess.run(
            integrator_command(command, "--help"), capture_output=True, text=True, check=True
        )
        assert "usage: integrator" in result.stdout


def test_secrets_never_reach_a_log_line(tmp_path: Path, daemon_factory, monkeypatch) -> None:
    secrets = {
        "T_ADMIN_TOKEN": "adm1n-t0ken-for-log-test",
        "T_BEARER": "bearer-s3cret-for-log-test",
        "T_IN_BODY": "b0dy-s3cret-for-log-test",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    daemon = daemon_factory(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
shutdown_timeout = "2s"
log_level = "debug"
log_format = "json"

[admin]
listen = "127.0.0.1:0"
token = "${{env:T_ADMIN_TOKEN}}"

[connections.api]
url = "http://127.0.0.1:9"
auth = {{ type = "bearer", token = "${{env:T_BEARER}}" }}

[routes.leaky]
middleware = [{{ type = "log", level = "info", body = true }}]
sinks = [{{ type = "http", connection = "api", path = "/t/${{env:T_BEARER}}", retry = {{ initial = "20ms", max = "50ms" }} }}]
[routes.leaky.source]
type = "timer"
interval = "100ms"
body = {{ note = "carries ${{env:T_IN_BODY}}" }}
"""
    )
    daemon.wait_for_log("ready:")
    daemon.wait_for_log("failed for message")  # the sink's errors are logged, with the URL
    assert daemon.stop() == 0
    log = daemon.log()
    for value in secrets.values():
        assert value not in log
    assert "***" in log
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())
