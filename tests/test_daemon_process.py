"""The daemon as operators run it: a real subprocess, real signals."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from core_support import integrator_command

from integrator.testing import DaemonProcess


@pytest.fixture
def start_daemon(tmp_path: Path, daemon_process):
    """Write ``integrator.toml`` in tmp_path and run it; the file stays there for reloads."""

    def start(config_text: str) -> DaemonProcess:
        path = tmp_path / "integrator.toml"
        path.write_text(config_text)
        return daemon_process(path)

    return start


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


async def test_sigterm_drains_and_exits_zero(tmp_path: Path, start_daemon) -> None:
    daemon = start_daemon(config(tmp_path))
    await daemon.wait_for_output("ready: 1 route running")
    await daemon.wait_until(lambda: len(delivered(tmp_path / "out.jsonl")) >= 3, "3 deliveries")
    assert await daemon.stop(sig=signal.SIGTERM) == 0
    log = daemon.output()
    assert "received SIGTERM" in log
    assert "stopped" in log
    assert "Traceback" not in log


async def test_the_log_names_the_event_loop_uvloop_when_installed(
    tmp_path: Path, start_daemon
) -> None:
    daemon = start_daemon(config(tmp_path))
    await daemon.wait_ready()
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"event loop: {expected}" in daemon.output()


async def test_sigint_stops_cleanly_too(tmp_path: Path, start_daemon) -> None:
    daemon = start_daemon(config(tmp_path))
    await daemon.wait_ready()
    assert await daemon.stop(sig=signal.SIGINT) == 0


async def test_sighup_with_a_valid_config_restarts_only_changed_routes(
    tmp_path: Path, start_daemon
) -> None:
    daemon = start_daemon(config(tmp_path))
    await daemon.wait_for_output("ready: 1 route running")
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
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_for_output("reloaded")
    assert "1 route(s) restarted or added, 0 removed, 1 unchanged" in daemon.output()
    await daemon.wait_until(lambda: delivered(other), "the added route to deliver")
    assert await daemon.stop() == 0


async def test_sighup_with_an_invalid_config_keeps_the_old_one_running(
    tmp_path: Path, start_daemon
) -> None:
    out = tmp_path / "out.jsonl"
    daemon = start_daemon(config(tmp_path))
    await daemon.wait_for_output("ready: 1 route running")
    (tmp_path / "integrator.toml").write_text(config(tmp_path, interval="soon"))
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_for_output("reload refused")
    await daemon.wait_for_output("routes.ticks.source.interval: expected a duration")
    before = len(delivered(out))
    await anyio.sleep(0.5)
    assert len(delivered(out)) > before, "the old config keeps running"
    assert daemon.running
    assert await daemon.stop() == 0
    audit = await anyio.run_process(
        integrator_command(
            "audit", "--state-dir", str(tmp_path / "state"), "--action", "config.reload", "--json"
        ),
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


async def test_secrets_never_reach_a_log_line(tmp_path: Path, start_daemon, monkeypatch) -> None:
    secrets = {
        "T_ADMIN_TOKEN": "adm1n-t0ken-for-log-test",
        "T_BEARER": "bearer-s3cret-for-log-test",
        "T_IN_BODY": "b0dy-s3cret-for-log-test",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    daemon = start_daemon(
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
    await daemon.wait_ready()
    await daemon.wait_for_output("failed for message")  # the sink's errors, with the URL
    assert await daemon.stop() == 0
    log = daemon.output()
    for value in secrets.values():
        assert value not in log
    assert "***" in log
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())
