"""``kill -9`` between receiving a message and acking it: the server redelivers it.

The daemon runs as a real ``integrator run`` process. To stop it exactly between
receive and ack, the test holds the store's write lock (as a slow disk would), so
the fetched message cannot be committed and so is not acked; then it kills the
process, and a fresh daemon on the same state directory gets the message again.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

pytestmark = pytest.mark.service("nats")

INTEGRATOR = str(Path(sys.executable).with_name("integrator"))


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [INTEGRATOR, "run", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )


async def wait_lines(path: Path, count: int, daemon: subprocess.Popen[bytes], log: Path) -> list:
    with anyio.move_on_after(20):
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
            assert daemon.poll() is None, f"the daemon exited:\n{log.read_text()}"
            await anyio.sleep(0.05)
    raise AssertionError(f"{path} has fewer than {count} lines; daemon log:\n{log.read_text()}")


async def test_a_message_received_but_not_acked_when_killed_comes_back(
    streams: Any, tmp_path: Path, eventually: Any
) -> None:
    stream = await streams.create("kill")
    out, log, state = tmp_path / "out.jsonl", tmp_path / "daemon.log", tmp_path / "state"
    config = tmp_path / "integrator.toml"
    config.write_text(f"""
        [daemon]
        state_dir = "{state}"
        shutdown_timeout = "2s"

        [admin]
        enabled = false

        [store]
        options = {{ busy_timeout = 60 }}

        [routes.kill]
        dedupe_window = "1h"
        sinks = [{{ type = "file", path = "{out}", fsync = "never" }}]

        [routes.kill.source]
        type = "nats"
        stream = "{stream}"
        durable = "killed"
        fetch_wait = "200ms"
        ack_wait = "1s"
    """)
    daemon = start_daemon(config, log)
    try:
        await streams.publish(f"{stream}.x", b'"before"')
        await wait_lines(out, 1, daemon, log)  # the daemon is up and consuming

        lock = sqlite3.connect(state / "integrator.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the store cannot commit from now on
        await streams.publish(f"{stream}.x", b'"during"')

        async def received_not_acked() -> bool:
            return (await streams.js.consumer_info(stream, "killed")).num_ack_pending == 1

        await eventually(received_not_acked, 10, "the daemon to receive the message")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        lock.rollback()
        lock.close()
        assert (await streams.js.consumer_info(stream, "killed")).num_ack_pending == 1

        daemon = start_daemon(config, log)
        seen = await wait_lines(out, 2, daemon, log)
        assert [line["body"] for line in seen] == ["before", "during"]
        assert [line["id"] for line in seen] == [f"{stream}:1", f"{stream}:2"]
        assert seen[1]["attributes"]["delivered"] == 2  # a redelivery, not a new message
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(10)
