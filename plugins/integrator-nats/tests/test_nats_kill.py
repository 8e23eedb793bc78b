"""``kill -9`` between receiving a message and acking it: the server redelivers it.

The daemon runs as a real ``integrator run`` process. To stop it exactly between
receive and ack, the test holds the store's write lock (as a slow disk would), so
the fetched message cannot be committed and so is not acked; then it kills the
process, and a fresh daemon on the same state directory gets the message again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from integrator.testing import StoreLock, daemon_config, eventually, read_jsonl, store_settled

pytestmark = pytest.mark.service("nats")


async def test_a_message_received_but_not_acked_when_killed_comes_back(
    streams: Any, tmp_path: Path, daemon_process: Any
) -> None:
    stream = await streams.create("kill")
    out, state = tmp_path / "out.jsonl", tmp_path / "state"
    config = tmp_path / "integrator.toml"
    routes = f"""
        [routes.kill]
        dedupe_window = "1h"
        sinks = [{{ type = "file", path = "{out}", fsync = "never" }}]

        [routes.kill.source]
        type = "nats"
        stream = "{stream}"
        durable = "killed"
        fetch_wait = "200ms"
        ack_wait = "1s"
    """
    config.write_text(daemon_config(routes, state, shutdown_timeout="2s", store_busy_timeout=60))
    daemon = daemon_process(config)
    await streams.publish(f"{stream}.x", b'"before"')
    await daemon.wait_until(lambda: read_jsonl(out), "the daemon to consume")
    await daemon.wait_until(lambda: store_settled(state), "the first delivery to be recorded")

    with StoreLock(state):  # the store cannot commit from now on
        await streams.publish(f"{stream}.x", b'"during"')

        async def received_not_acked() -> bool:
            return (await streams.js.consumer_info(stream, "killed")).num_ack_pending == 1

        await eventually(received_not_acked, "the daemon to receive the message")
        daemon.kill()
    assert (await streams.js.consumer_info(stream, "killed")).num_ack_pending == 1

    daemon = daemon_process(config)
    await daemon.wait_until(lambda: len(read_jsonl(out)) >= 2, "the message after the restart")
    seen = read_jsonl(out)
    assert [line["body"] for line in seen] == ["before", "during"]
    assert [line["id"] for line in seen] == [f"{stream}:1", f"{stream}:2"]
    assert seen[1]["attributes"]["delivered"] == 2  # a redelivery, not a new message
