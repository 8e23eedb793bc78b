"""The ``redis_stream`` source against the local Redis: what it reads, and when it acknowledges."""

from __future__ import annotations

import anyio
import integrator_redis
import pytest
from integrator_redis.source import RedisStreamSource, StreamSourceOptions

from integrator.components import Context
from integrator.errors import StoreError
from integrator.payload import PayloadError, decode_body
from integrator.testing import eventually, read_jsonl


def make_source(stream: str, **options) -> RedisStreamSource:
    return RedisStreamSource(
        StreamSourceOptions(stream=stream, block=0.05, **options), Context(route="r")
    )


async def pending(redis_client, stream: str, group: str = "r") -> int:
    return (await redis_client.xpending(stream, group))["pending"]


async def test_entries_reach_a_file_sink_with_their_id_headers_and_attributes(
    run_route, redis_client, key, tmp_path
):
    stream, out = key(), tmp_path / "out.jsonl"
    async with run_route(
        f"""
        [routes.r]
        source = {{ type = "redis_stream", stream = "{stream}", block = "50ms" }}
        sinks = [{{ type = "file", path = "{out}" }}]
        """,
        integrator_redis,
    ) as daemon:
        json_id = await redis_client.xadd(stream, {"body": b'{"n": 1}', "tenant": "acme"})
        text_id = await redis_client.xadd(stream, {"body": b"plain words"})
        bare_id = await redis_client.xadd(stream, {"a": "1", "b": "2"})
        await daemon.wait_delivered("r", 3)
        await eventually(
            lambda: _none_pending(redis_client, stream), "every entry acknowledged", timeout=5
        )

    written = {m["id"]: m for m in read_jsonl(out)}  # the sink delivers concurrently: any order
    first = written[f"{stream}:{json_id.decode()}"]
    assert first["body"] == {"n": 1}
    assert first["headers"] == {"tenant": "acme"}
    assert first["attributes"] == {"stream": stream, "entry_id": json_id.decode()}
    assert written[f"{stream}:{text_id.decode()}"]["body"] == "plain words"
    assert written[f"{stream}:{bare_id.decode()}"]["body"] == {"a": "1", "b": "2"}


async def _none_pending(redis_client, stream: str) -> bool:
    return await pending(redis_client, stream) == 0


async def test_an_entry_is_acknowledged_only_after_the_commit_returns(redis_client, key, intake):
    stream = key()
    intake.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(make_source(stream).run, intake)
        await redis_client.xadd(stream, {"body": b"1"})
        with anyio.fail_after(5):
            await intake.submitting.wait()
        await anyio.sleep(0.1)
        assert await pending(redis_client, stream) == 1, "acknowledged before the commit"

        intake.gate.set()
        await eventually(lambda: _none_pending(redis_client, stream), "the XACK after the commit")
        tg.cancel_scope.cancel()
    assert [m.body for m in intake.committed] == [1]


async def test_a_failed_commit_leaves_the_entry_pending_for_the_next_run(redis_client, key, intake):
    stream = key()
    intake.fail = StoreError("disk full")
    source = make_source(stream)
    with pytest.RaisesGroup(StoreError), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(source.run, intake)
            entry_id = await redis_client.xadd(stream, {"body": b'"kept"'})
    assert await pending(redis_client, stream) == 1

    intake.fail = None  # the store is back: the restarted source reads its own pending entry
    async with anyio.create_task_group() as tg:
        await tg.start(source.run, intake)
        await eventually(lambda: intake.committed, "the pending entry")
        await eventually(lambda: _none_pending(redis_client, stream), "its acknowledgement")
        tg.cancel_scope.cancel()
    (message,) = intake.committed
    assert message.id == f"{stream}:{entry_id.decode()}"
    assert message.body == "kept"
    assert message.attributes["redelivered"] is True


async def test_entries_left_pending_by_a_dead_consumer_are_claimed(redis_client, key, intake):
    stream = key()
    await redis_client.xgroup_create(stream, "r", id="$", mkstream=True)
    await redis_client.xadd(stream, {"body": b"orphan"})
    await redis_client.xreadgroup("r", "gone-host", {stream: ">"})  # read, never acknowledged

    async with anyio.create_task_group() as tg:
        await tg.start(make_source(stream, claim_idle=0.1, consumer="this-host").run, intake)
        await eventually(lambda: intake.committed, "the claimed entry")
        await eventually(lambda: _none_pending(redis_client, stream), "its acknowledgement")
        tg.cancel_scope.cancel()
    assert [m.body for m in intake.committed] == ["orphan"]
    assert intake.committed[0].attributes["redelivered"] is True


async def test_no_entry_is_read_while_the_engine_refuses_intake(redis_client, key, intake):
    stream = key()
    async with anyio.create_task_group() as tg:
        await tg.start(make_source(stream).run, intake)
        intake.pause()  # backpressure: the store is above its high-water mark
        await anyio.sleep(0.1)  # let the source finish the read it was blocked in
        await redis_client.xadd(stream, {"body": b"1"})
        await anyio.sleep(0.3)
        groups = await redis_client.xinfo_groups(stream)
        assert groups[0]["pending"] == 0 and not intake.committed, "read under backpressure"

        intake.resume()
        await eventually(lambda: intake.committed, "the entry once intake resumes")
        tg.cancel_scope.cancel()


async def test_an_entry_that_is_not_json_under_decode_json_is_kept_raw_and_flagged(
    redis_client, key, intake
):
    stream = key()
    async with anyio.create_task_group() as tg:
        await tg.start(make_source(stream, decode="json").run, intake)
        await redis_client.xadd(stream, {"body": b"not json"})
        await eventually(lambda: intake.committed, "the entry")
        tg.cancel_scope.cancel()
    (message,) = intake.committed
    assert message.body == b"not json"
    assert message.attributes["decode_error"].startswith("not JSON")


async def test_a_json_body_is_handed_to_the_store_as_the_text_received(redis_client, key, intake):
    stream = key()
    async with anyio.create_task_group() as tg:
        await tg.start(make_source(stream).run, intake)
        json_id = await redis_client.xadd(stream, {"body": b'{"order": 7}'})
        text_id = await redis_client.xadd(stream, {"body": b"plain words"})
        fields_id = await redis_client.xadd(stream, {"a": "1"})  # no body field: a table
        await eventually(lambda: len(intake.committed) == 3, "the three entries")
        tg.cancel_scope.cancel()
    texts = {m.id: text for m, text in zip(intake.offered, intake.offered_json, strict=True)}
    assert texts == {
        f"{stream}:{json_id.decode()}": b'{"order": 7}',
        f"{stream}:{text_id.decode()}": None,
        f"{stream}:{fields_id.decode()}": None,
    }


@pytest.mark.parametrize(
    ("data", "mode", "body"),
    [
        (b'{"a": [1]}', "auto", {"a": [1]}),
        (b"hello", "auto", "hello"),
        (b"\xff\xfe", "auto", b"\xff\xfe"),
        (b'{"a": 1}', "text", '{"a": 1}'),
        (b'{"a": 1}', "bytes", b'{"a": 1}'),
    ],
)
def test_decode_modes(data, mode, body):
    assert decode_body(data, mode) == body


def test_decode_text_refuses_binary():
    with pytest.raises(PayloadError):
        decode_body(b"\xff", "text")
