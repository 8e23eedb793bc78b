"""``integrator status`` against a daemon running in this process, over loopback HTTP."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import anyio.to_thread
import pytest

from integrator.admin.views import RouteView, StatusView
from integrator.errors import IntegratorError
from integrator.status_cli import add_status_command, cmd_status, render
from tests.admin.admin_support import Components

TOKEN = "status-cli-token-0123"


def daemon_toml(out: Path) -> str:
    return f"""
        [admin]
        listen = "127.0.0.1:0"
        token = "{TOKEN}"

        [routes.ticks]
        source = {{ type = "timer", interval = "5ms", count = 3 }}
        sinks = [{{ type = "file", path = "{out}" }}]

        [routes.refused]
        source = {{ type = "timer", interval = "5ms", count = 2 }}
        sinks = [{{ type = "rejecting" }}]
    """


def client_config(tmp_path: Path, port: int, token: str = TOKEN) -> Path:
    """What the operator's config says: the listener's address and token."""
    path = tmp_path / "client.toml"
    path.write_text(f'[admin]\nlisten = "127.0.0.1:{port}"\ntoken = "{token}"\n')
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="integrator")
    add_status_command(parser.add_subparsers())
    return parser.parse_args(["status", *argv])


async def run_status(*argv: str) -> int:
    args = parse(*argv)
    code: int = await anyio.to_thread.run_sync(args.handler, args)
    return code


async def test_status_prints_a_row_per_route(
    run_route, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_route(daemon_toml(tmp_path / "out.jsonl"), Components()) as d:
        await d.wait_delivered("ticks", 3)
        await d.wait_for(lambda: d.services.stats["refused"].sink("rejecting").dead == 2)
        config = client_config(tmp_path, d.services.shared["admin"].port)
        assert await run_status("-c", str(config)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("integrator ") and "ready" in lines[0]
    header = next(line for line in lines if line.startswith("ROUTE"))
    assert header.split() == [
        "ROUTE", "STATE", "IN/s", "OUT/s", "QUEUE", "DLQ", "BREAKER", "LAST", "SUCCESS", "LAST",
        "ERROR",
    ]  # fmt: skip
    ticks = next(line for line in lines if line.startswith("ticks "))
    refused = next(line for line in lines if line.startswith("refused "))
    assert ticks.split()[1] == "running"
    assert refused.split()[1:3] == ["running", "(degraded)"]
    assert " 2 " in refused  # the DLQ column
    assert "remote refused the message" in refused


async def test_status_json_is_the_admin_api_answer(
    run_route, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_route(daemon_toml(tmp_path / "out.jsonl"), Components()) as d:
        await d.wait_delivered("ticks", 3)
        config = client_config(tmp_path, d.services.shared["admin"].port)
        assert await run_status("-c", str(config), "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ready"] is True
    assert [r["name"] for r in status["routes"]] == ["ticks", "refused"]
    assert status["routes"][0]["sinks"][0]["delivered"] == 3


async def test_the_token_can_come_from_the_environment(
    run_route, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTEGRATOR_ADMIN_TOKEN", TOKEN)
    async with run_route(daemon_toml(tmp_path / "out.jsonl"), Components()) as d:
        port = d.services.shared["admin"].port
        # The config reads the token from a systemd credential this shell does not have.
        config = tmp_path / "client.toml"
        config.write_text(f'[admin]\nlisten = "127.0.0.1:{port}"\ntoken = "${{cred:admin}}"\n')
        assert await run_status("-c", str(config), "--json") == 0
    assert json.loads(capsys.readouterr().out)["ready"] is True


async def test_a_wrong_token_is_a_clear_error(run_route, tmp_path: Path) -> None:
    async with run_route(daemon_toml(tmp_path / "out.jsonl"), Components()) as d:
        config = client_config(tmp_path, d.services.shared["admin"].port, token="nope-nope")
        with pytest.raises(IntegratorError, match="refused the token"):
            await run_status("-c", str(config))


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = client_config(tmp_path, port)
    with pytest.raises(IntegratorError) as caught:
        cmd_status(parse("-c", str(config)))
    assert str(caught.value).startswith(
        f"cannot reach the admin API at 127.0.0.1:{port}: is the daemon running?"
    )


def test_a_disabled_admin_listener_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text("[admin]\nenabled = false\n")
    with pytest.raises(IntegratorError, match="enabled = false"):
        cmd_status(parse("-c", str(config)))


def test_long_errors_are_cut_to_the_terminal_width() -> None:
    route = RouteView(
        name="orders", state="running", health="degraded", source="webhook", description="",
        received=10, duplicates=0, processed=10, dropped=0, dead=0, rate_in=2.5, rate_out=12.0,
        inbox_depth=0, depth=4, dlq=1, last_success_at=None, last_error="x" * 500,
        last_error_at=None, breaker="half_open", breakers={}, sinks=[], components=[],
    )  # fmt: skip
    status = StatusView(
        version="1.0", started_at=0, uptime=0, ready=False, reasons=["orders is failing"],
        dlq_total=1, breakers={}, routes=[route],
    )  # fmt: skip
    text = render(status, width=100)
    lines = text.splitlines()
    assert "NOT READY" in lines[0]
    assert lines[1] == "  - orders is failing"
    row = lines[-1]
    assert len(row) <= 100 and row.endswith("…")
    assert row.split()[:8] == [
        "orders",
        "running",
        "(degraded)",
        "2.5",
        "12",
        "4",
        "1",
        "half-open",
    ]
