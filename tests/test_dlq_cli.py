"""`integrator dlq list|show|replay|purge` against a real store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest
from core_support import integrator_command

from integrator.cli import main
from integrator.delivery.sqlite import SQLiteStore
from integrator.message import Message


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory holding three dead letters: two of route a, one of route b."""
    state = tmp_path / "state"

    async def fill() -> None:
        store = SQLiteStore(None, state)
        await store.open()
        for route, body, error in (
            ("a", 1, "HTTP 400 Bad Request"),
            ("a", 2, "HTTP 422"),
            ("b", 3, "bad field"),
        ):
            await store.enqueue(route, [Message(body={"n": body}, id=f"msg-{body}")])
            (item,) = await store.inbox_after(route, 0, 10)
            await store.route_done([(item, {"http": [item.message]})])
            (delivery,) = await store.deliveries_after(route, "http", 0, 10)
            await store.dead_letter(delivery, error)
        await store.close()

    anyio.run(fill)
    return state


def dlq(state: Path, *args: str) -> list[str]:
    return ["dlq", args[0], "--state-dir", str(state), *args[1:]]


def test_list_shows_every_dead_letter(state: Path, capsys) -> None:
    assert main(dlq(state, "list")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "ID",
        "ROUTE",
        "SINK",
        "ATTEMPTS",
        "FAILED",
        "AT",
        "LAST",
        "ERROR",
    ]
    assert "HTTP 400 Bad Request" in out and "bad field" in out
    assert len(out.splitlines()) == 4


def test_list_filters_by_route(state: Path, capsys) -> None:
    assert main(dlq(state, "list", "--route", "b", "--json")) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["route"], e["message"]["body"]) for e in entries] == [("b", {"n": 3})]


def test_list_filters_by_since(state: Path, capsys) -> None:
    assert main(dlq(state, "list", "--since", "1h", "--json")) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(dlq(state, "list", "--since", "2999-01-01T00:00", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_show_prints_the_message_and_its_errors(state: Path, capsys) -> None:
    assert main(dlq(state, "show", "1")) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["message"]["id"] == "msg-1"
    assert entry["last_error"] == "HTTP 400 Bad Request"
    assert entry["attempts"] == 1 and entry["sink"] == "http"


def test_show_of_an_unknown_id_fails(state: Path, capsys) -> None:
    assert main(dlq(state, "show", "99")) == 1
    assert "no dead letter with id 99" in capsys.readouterr().err


def test_replay_by_route_moves_them_back_into_delivery(state: Path, capsys) -> None:
    assert main(dlq(state, "replay", "--route", "a")) == 0
    assert "replayed 2 dead letters" in capsys.readouterr().out

    async def check() -> tuple[int, int]:
        store = SQLiteStore(None, state)
        await store.open()
        try:
            return await store.dlq_count(), len(await store.deliveries_after("a", "http", 0, 10))
        finally:
            await store.close()

    assert anyio.run(check) == (1, 2)


def test_replay_needs_a_selection(state: Path, capsys) -> None:
    assert main(dlq(state, "replay")) == 1
    assert "give dead-letter IDs, --route ROUTE or --all" in capsys.readouterr().err


def test_purge_without_yes_and_without_a_terminal_refuses(state: Path) -> None:
    result = subprocess.run(
        integrator_command(*dlq(state, "purge", "--all")),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "refusing to purge 3 dead letter(s) of ALL routes without --yes" in result.stderr


def test_purge_with_yes_deletes(state: Path, capsys) -> None:
    assert main(dlq(state, "purge", "--all", "--yes")) == 0
    assert "purged 3 dead letters" in capsys.readouterr().out
    assert main(dlq(state, "list")) == 0
    assert "no dead letters" in capsys.readouterr().out


def test_purge_asks_for_confirmation_on_a_terminal(state: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(dlq(state, "purge", "1", "2")) == 0
    assert "nothing purged" in capsys.readouterr().out
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert main(dlq(state, "purge", "1", "2")) == 0
    assert "purged 2 dead letters" in capsys.readouterr().out


def test_replays_and_purges_are_in_the_audit_trail(state: Path, capsys) -> None:
    assert main(dlq(state, "replay", "1")) == 0
    assert main(dlq(state, "purge", "--route", "b", "--yes")) == 0
    capsys.readouterr()
    assert main(["audit", "--state-dir", str(state), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["details"]) for e in entries] == [
        ("dlq.purge", {"route": "b", "all": False, "count": 1}),
        ("dlq.replay", {"ids": [1], "count": 1}),
    ]
    assert all(e["actor"].endswith("(cli)") for e in entries)
