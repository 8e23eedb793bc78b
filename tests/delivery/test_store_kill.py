"""kill -9 of a process whose store (``commit_on = "auto"``) has moved its commits to
the writer process mid-load: every write acknowledged before the kill, on either side
of the switch, is in the store afterwards."""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest

from integrator.testing.waiting import eventually
from tests.test_kill9 import writer_processes

WRITER = """
import asyncio, sys
from pathlib import Path
from integrator.delivery.sqlite import SQLiteOptions, SQLiteStore
from integrator.message import Message

async def main(state: str) -> None:
    store = SQLiteStore(SQLiteOptions(commit_on="auto"), Path(state))
    # Busy from the first commit: the switch comes early in the load.
    store.AUTO_WINDOW, store.AUTO_BUSY, store.AUTO_BUSY_SECONDS = 0.0, 0.0, 1
    await store.open()
    counter = iter(range(10**9))
    switched = False

    async def writer() -> None:
        nonlocal switched
        for n in counter:
            await store.enqueue("r", [Message(body=n, id=f"m{n}")])
            print(f"ack m{n}", flush=True)
            if not switched and store._process is not None and store._process.ready:
                switched = True
                print("switched", flush=True)

    await asyncio.gather(*(writer() for _ in range(16)))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.timeout(60)
async def test_every_write_acknowledged_across_the_switch_survives_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    state = tmp_path / "state"
    acked: list[str] = []
    switched_at: int | None = None  # how many were acknowledged before the switch
    async with await anyio.open_process([sys.executable, str(script), str(state)]) as process:
        assert process.stdout is not None
        buffered = b""
        with anyio.fail_after(30):
            async for chunk in process.stdout:
                *lines, buffered = (buffered + chunk).split(b"\n")
                for line in lines:
                    if line.startswith(b"ack "):
                        acked.append(line[4:].decode())
                    elif line == b"switched":
                        switched_at = len(acked)
                if switched_at is not None and len(acked) - switched_at > 500:
                    break
        process.send_signal(signal.SIGKILL)
        await process.wait()
    with sqlite3.connect(state / "integrator.db") as conn:
        stored = {msg_id for (msg_id,) in conn.execute("SELECT msg_id FROM inbox")}
    assert switched_at is not None and switched_at > 0  # some on the thread, then the process
    assert set(acked) <= stored
    # The writer process ends with its daemon, at the end of its socket.
    await eventually(lambda: not writer_processes(state), "the writer process to end")
