"""sd_notify: what the daemon tells systemd, observed on a real AF_UNIX datagram socket."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from integrator.systemd import Notifier

WATCHDOG_USEC = 100_000  # pings every 50 ms


class Listener:
    """Plays systemd's side of the notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def receive(self, timeout: float = 2.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> list[dict[str, str]]:
        """Every datagram already queued, without waiting."""
        received = []
        while True:
            try:
                received.append(self.receive(timeout=0.001))
            except TimeoutError:
                return received

    async def receive_async(self) -> dict[str, str]:
        with anyio.fail_after(2):
            await anyio.wait_readable(self.sock)
        return self.receive()


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[Listener]:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        yield Listener(sock, address)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"integrator-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        yield Listener(sock, "@" + name)


def watchdog_env(listener: Listener, **extra: str) -> dict[str, str]:
    return {**listener.env, "WATCHDOG_USEC": str(WATCHDOG_USEC), **extra}


def test_ready_with_status_reaches_a_path_socket(path_listener: Listener) -> None:
    Notifier.from_env(path_listener.env).ready(status="listening on 127.0.0.1:8080")

    assert path_listener.receive() == {"READY": "1", "STATUS": "listening on 127.0.0.1:8080"}


def test_ready_reaches_an_abstract_socket(abstract_listener: Listener) -> None:
    Notifier.from_env(abstract_listener.env).ready()

    assert abstract_listener.receive() == {"READY": "1"}


def test_environment_is_read_from_os_environ_by_default(
    path_listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.env["NOTIFY_SOCKET"])

    Notifier.from_env().stopping()

    assert path_listener.receive() == {"STOPPING": "1"}


def test_reloading_carries_the_monotonic_clock_in_microseconds(path_listener: Listener) -> None:
    before = time.monotonic_ns() // 1000
    Notifier.from_env(path_listener.env).reloading()
    after = time.monotonic_ns() // 1000

    fields = path_listener.receive()
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_status_cannot_forge_extra_fields_with_a_newline(path_listener: Listener) -> None:
    Notifier.from_env(path_listener.env).status("draining\nREADY=1")

    assert path_listener.receive() == {"STATUS": "draining READY=1"}


def test_generic_notify_sends_every_field(path_listener: Listener) -> None:
    Notifier.from_env(path_listener.env).notify(EXTEND_TIMEOUT_USEC=60_000_000, STATUS="slow")

    assert path_listener.receive() == {"EXTEND_TIMEOUT_USEC": "60000000", "STATUS": "slow"}


def test_watchdog_interval_is_half_the_deadline(path_listener: Listener) -> None:
    notifier = Notifier.from_env(watchdog_env(path_listener, WATCHDOG_PID=str(os.getpid())))

    assert notifier.watchdog_interval == pytest.approx(0.05)
    notifier.watchdog()
    assert path_listener.receive() == {"WATCHDOG": "1"}


def test_watchdog_of_another_pid_is_not_ours(path_listener: Listener) -> None:
    notifier = Notifier.from_env(watchdog_env(path_listener, WATCHDOG_PID=str(os.getpid() + 1)))

    assert notifier.watchdog_interval is None
    notifier.watchdog()
    notifier.stopping()
    assert path_listener.receive() == {"STOPPING": "1"}  # the watchdog ping never left


async def test_watchdog_loop_pings_only_while_healthy(path_listener: Listener) -> None:
    notifier = Notifier.from_env(watchdog_env(path_listener))
    healthy = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.watchdog_loop, lambda: healthy)
        for _ in range(3):
            assert await path_listener.receive_async() == {"WATCHDOG": "1"}

        healthy = False
        await anyio.sleep(0.1)  # let a ping that was already due go out
        path_listener.pending()
        await anyio.sleep(0.3)  # six intervals
        assert path_listener.pending() == []

        healthy = True
        assert await path_listener.receive_async() == {"WATCHDOG": "1"}
        tg.cancel_scope.cancel()


async def test_a_raising_health_check_withholds_pings_and_warns_once(
    path_listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> bool:
        raise RuntimeError("supervisor state unreadable")

    async with anyio.create_task_group() as tg:
        tg.start_soon(Notifier.from_env(watchdog_env(path_listener)).watchdog_loop, broken)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()

    assert path_listener.pending() == []
    assert caplog.text.count("supervisor state unreadable") == 1  # on the transition only


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": str(WATCHDOG_USEC)})

    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready(status="up")
    notifier.reloading()
    notifier.watchdog()


async def test_watchdog_loop_returns_at_once_when_disabled() -> None:
    with anyio.fail_after(1):
        await Notifier.from_env({}).watchdog_loop(lambda: True)


def test_a_vanished_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address = tmp_path / "gone"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
    address.unlink()
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(address)})

    with caplog.at_level(logging.DEBUG, logger="integrator.systemd"):
        notifier.ready()
        notifier.stopping()

    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "sd_notify" in caplog.text
