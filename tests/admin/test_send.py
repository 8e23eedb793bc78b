"""``integrator send``: a message injected into a running daemon's route."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anyio.to_thread
import pytest

from integrator.errors import IntegratorError
from integrator.send_cli import add_send_command

TOKEN = "send-cli-token-0123"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="integrator")
    add_send_command(parser.add_subparsers())
    return parser.parse_args(["send", *argv])


async def send(*argv: str) -> int:
    args = parse(*argv)
    code: int = await anyio.to_thread.run_sync(args.handler, args)
    return code


def daemon_toml(out: Path) -> str:
    return f"""
        [admin]
        listen = "127.0.0.1:0"
        token = "{TOKEN}"

        [routes.manual]
        dedupe_window = "1h"
        source = {{ type = "timer", interval = "1h", immediately = false }}
        middleware = [{{ type = "map", set = {{ "body.seen" = "`true`" }} }}]
        sinks = [{{ type = "file", path = "{out}" }}]
    """


async def test_a_sent_message_goes_through_the_route(
    run_route, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("INTEGRATOR_ADMIN_TOKEN", TOKEN)
    out = tmp_path / "out.jsonl"
    async with run_route(daemon_toml(out)) as d:
        url = d.services.shared["admin"].url
        code = await send(
            "manual",
            "--data",
            '{"order": 7}',
            "--header",
            "X-Source=cli",
            "--id",
            "m-1",
            "--url",
            url,
        )
        assert code == 0
        await d.wait_delivered("manual", 1)
    line = json.loads(out.read_text())
    assert (line["id"], line["body"]) == ("m-1", {"order": 7, "seen": True})
    assert line["headers"] == {"x-source": "cli"}
    assert "manual: message m-1 accepted" in capsys.readouterr().out


async def test_a_repeated_id_is_acknowledged_but_not_processed(
    run_route, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("INTEGRATOR_ADMIN_TOKEN", TOKEN)
    async with run_route(daemon_toml(tmp_path / "out.jsonl")) as d:
        url = d.services.shared["admin"].url
        for _ in range(2):
            assert await send("manual", "--data", "{}", "--id", "same", "--url", url) == 0
        await d.wait_delivered("manual", 1)
        assert d.services.stats["manual"].duplicates == 1
    assert "already seen (dedupe window)" in capsys.readouterr().out


async def test_the_body_can_come_from_a_file(run_route, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INTEGRATOR_ADMIN_TOKEN", TOKEN)
    body = tmp_path / "body.json"
    body.write_text('{"from": "file"}')
    out = tmp_path / "out.jsonl"
    async with run_route(daemon_toml(out)) as d:
        assert (
            await send("manual", "--file", str(body), "--url", d.services.shared["admin"].url) == 0
        )
        await d.wait_delivered("manual", 1)
    assert json.loads(out.read_text())["body"]["from"] == "file"


async def test_an_unknown_route_is_a_clear_error(run_route, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INTEGRATOR_ADMIN_TOKEN", TOKEN)
    async with run_route(daemon_toml(tmp_path / "out.jsonl")) as d:
        with pytest.raises(IntegratorError, match="answered 404: no route named 'nope'"):
            await send("nope", "--data", "{}", "--url", d.services.shared["admin"].url)


def test_invalid_json_is_refused_before_sending() -> None:
    args = parse("r", "--data", "{nope", "--url", "http://127.0.0.1:9")
    with pytest.raises(IntegratorError, match="--data: not valid JSON"):
        args.handler(args)


def test_a_daemon_that_is_not_running_is_a_clear_error() -> None:
    args = parse("r", "--data", "{}", "--url", "http://127.0.0.1:9")
    with pytest.raises(IntegratorError, match=r"cannot reach the admin API at 127\.0\.0\.1:9"):
        args.handler(args)
