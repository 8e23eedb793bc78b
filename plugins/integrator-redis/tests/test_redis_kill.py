"""``kill -9`` between receiving an entry and acknowledging it: the entry is not lost.

The daemon runs as a real ``integrator run`` subprocess. The test holds the store's
SQLite file locked so that the commit of the received entry hangs, which pins the
daemon exactly between XREADGROUP and XACK; then it kills the daemon, releases the
lock and starts a new daemon, which must deliver the entry.
"""

from __future__ import annotations

import redis.exceptions as rex

from integrator.testing import StoreLock, daemon_config, eventually, read_jsonl


async def test_an_entry_received_but_not_acknowledged_survives_kill_9(
    tmp_path, redis_client, key, daemon_process
):
    stream, out, state = key(), tmp_path / "out.jsonl", tmp_path / "state"
    config = tmp_path / "integrator.toml"
    routes = f"""
        [routes.r]
        source = {{ type = "redis_stream", stream = "{stream}", consumer = "kill-test", block = "50ms" }}
        sinks = [{{ type = "file", path = "{out}" }}]
    """
    config.write_text(daemon_config(routes, state, shutdown_timeout="2s", store_busy_timeout=30))

    async def consumer_registered() -> bool:
        try:
            consumers = await redis_client.xinfo_consumers(stream, "r")
        except rex.ResponseError:  # no group yet
            return False
        return any(c["name"] == b"kill-test" for c in consumers)

    async def pending() -> int:
        return (await redis_client.xpending(stream, "r"))["pending"]

    first = daemon_process(config)
    await first.wait_until(consumer_registered, "the daemon to start reading")

    with StoreLock(state):
        entry_id = await redis_client.xadd(stream, {"body": b'{"order": 42}'})
        await eventually(lambda: _equals(pending(), 1), "the daemon to receive the entry")
        first.kill()
    assert await pending() == 1, "the entry was acknowledged although never committed"
    assert read_jsonl(out) == []

    second = daemon_process(config)
    await second.wait_until(lambda: read_jsonl(out), "the entry delivered after the restart")
    await eventually(lambda: _equals(pending(), 0), "the entry acknowledged after the restart")
    assert await second.stop() == 0, second.output()

    (message,) = read_jsonl(out)
    assert message["id"] == f"{stream}:{entry_id.decode()}"
    assert message["body"] == {"order": 42}


async def _equals(value, expected) -> bool:
    return await value == expected
