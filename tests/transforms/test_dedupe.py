"""dedupe: drop a message whose key was seen within a window, remembered by the store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from integrator import Middleware, Next, hookimpl
from integrator.components import Context
from integrator.delivery.sqlite import SQLiteStore
from integrator.errors import DeliveryError, Reject
from integrator.message import Message, decode, encode
from integrator.testing import running_daemon
from integrator.transforms.dedupe import DedupeMiddleware, MemorySeen, key_text


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(None, tmp_path)
    await store.open()
    yield store
    await store.close()


def order(number: object, *, id: str) -> Message:
    return Message(body={"order": number}, id=id)


# -- the store's memory ----------------------------------------------------------------------


async def test_the_store_remembers_a_key_within_its_scope(store: SQLiteStore) -> None:
    assert await store.remember("s", "k", 60) is True
    assert await store.remember("s", "k", 60) is False
    assert await store.remember("other", "k", 60) is True, "scopes are apart"
    assert await store.remember("s", "k2", 60) is True


async def test_the_store_forgets_a_key_after_the_window(store: SQLiteStore) -> None:
    assert await store.remember("s", "k", 0.05) is True
    await anyio.sleep(0.08)
    assert await store.remember("s", "k", 0.05) is True
    assert await store.remember("s", "k", 0.05) is False


async def test_the_same_owner_is_not_its_own_duplicate(store: SQLiteStore) -> None:
    assert await store.remember("s", "k", 60, owner="m1") is True
    assert await store.remember("s", "k", 60, owner="m1") is True
    assert await store.remember("s", "k", 60, owner="m2") is False


async def test_keys_that_share_a_beginning_are_different_keys(store: SQLiteStore) -> None:
    assert await store.remember("s", "a", 60, owner="x:y") is True
    assert await store.remember("s", "a:x", 60, owner="y") is True
    assert await store.remember("s", "a:", 60) is True
    assert await store.remember("s", "a", 60, owner="z") is False


async def test_the_memory_survives_closing_the_store(tmp_path: Path) -> None:
    first = SQLiteStore(None, tmp_path)
    await first.open()
    assert await first.remember("s", "k", 60) is True
    await first.close()
    again = SQLiteStore(None, tmp_path)
    await again.open()
    try:
        assert await again.remember("s", "k", 60) is False
    finally:
        await again.close()


# -- the middleware ----------------------------------------------------------------------------


def dedupe(build, store: object | None, **raw: object) -> DedupeMiddleware:
    services = {"store": store} if store is not None else {}
    middleware: DedupeMiddleware = build(
        DedupeMiddleware, Context(route="orders", services=services), **raw
    )
    return middleware


async def test_a_second_message_with_the_same_key_is_dropped(build, run, store) -> None:
    middleware = dedupe(build, store, key="body.order", window="1h")
    first = order(7, id="a")
    assert await run(middleware, message=first) == [first]
    assert await run(middleware, message=order(7, id="b")) == []
    assert len(await run(middleware, message=order(8, id="c"))) == 1
    assert len(await run(middleware, message=order("7", id="d"))) == 1, "'7' is not 7"


async def test_the_default_key_is_the_message_id(build, run, store) -> None:
    """A source that receives a message again makes a new copy of it: a duplicate."""
    middleware = dedupe(build, store, window="1h")
    assert len(await run(middleware, message=order(1, id="a"))) == 1
    assert await run(middleware, message=order(1, id="a")) == []


@pytest.mark.parametrize("key", ["body.order", "id"])
async def test_a_message_running_the_chain_again_is_not_dropped(
    build, run, store, key: str
) -> None:
    """A later layer failed and the stored message is retried: it must pass dedupe again."""
    middleware = dedupe(build, store, key=key, window="1h")
    stored = order(7, id="a")
    assert len(await run(middleware, message=stored)) == 1
    retried = decode(encode(stored))
    assert len(await run(middleware, message=retried)) == 1


async def test_routes_naming_one_scope_share_the_memory(build, run, store) -> None:
    one = build(
        DedupeMiddleware,
        Context(route="one", services={"store": store}),
        key="body.order",
        window="1h",
        scope="shared",
    )
    two = build(
        DedupeMiddleware,
        Context(route="two", services={"store": store}),
        key="body.order",
        window="1h",
        scope="shared",
    )
    unscoped = dedupe(build, store, key="body.order", window="1h")
    assert len(await run(one, message=order(7, id="a"))) == 1
    assert await run(two, message=order(7, id="b")) == []
    assert len(await run(unscoped, message=order(7, id="c"))) == 1


async def test_a_message_without_a_key_passes(build, run, store) -> None:
    middleware = dedupe(build, store, key="body.missing", window="1h")
    assert len(await run(middleware, message=order(1, id="a"))) == 1
    assert len(await run(middleware, message=order(1, id="b"))) == 1


async def test_an_expression_failing_on_a_message_rejects_it(build, run, store) -> None:
    middleware = dedupe(build, store, key="length(body.order)", window="1h")
    with pytest.raises(Reject, match=r"^dedupe: key: invalid expression"):
        await run(middleware, message=order(7, id="a"))


async def test_a_store_that_cannot_write_makes_the_message_wait(build, run, store) -> None:
    middleware = dedupe(build, store, key="body.order", window="1h")
    await store.close()
    with pytest.raises(DeliveryError) as caught:
        await run(middleware, message=order(7, id="a"))
    assert caught.value.retriable is True
    assert "store" in caught.value.reason


async def test_without_a_store_the_memory_is_in_the_process(build, run) -> None:
    middleware = dedupe(build, None, key="body.order", window="1h")
    assert isinstance(middleware.memory, MemorySeen)
    stored = order(7, id="a")
    assert len(await run(middleware, message=stored)) == 1
    assert len(await run(middleware, message=stored)) == 1
    assert await run(middleware, message=order(7, id="b")) == []


def test_equal_values_give_equal_keys_whatever_their_order() -> None:
    assert key_text({"a": 1, "b": [2]}) == key_text({"b": [2], "a": 1})
    assert key_text("x" * 1000).startswith("sha256:")
    assert key_text("7") != key_text(7)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"window": "0s"}, r"^window: must be longer than zero"),
        ({"window": "1h", "key": "body. =="}, r"^key: invalid expression"),
        ({"window": "1h", "scope": " "}, r"^scope: cannot be empty"),
    ],
)
def test_bad_options_are_refused(build, raw: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build(DedupeMiddleware, **raw)


# -- in a daemon -------------------------------------------------------------------------------


async def test_a_key_seen_before_a_restart_is_still_a_duplicate_after(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    # The route also dedupes ids at intake: the two memories must not collide.
    toml = f"""
    [routes.orders]
    dedupe_window = "1h"
    source = {{ type = "timer", interval = "1ms", count = 3, body = {{ order = 7 }} }}
    middleware = [{{ type = "dedupe", key = "body.order", window = "1h" }}]
    sinks = [{{ type = "file", path = "{out}" }}]
    """
    state = tmp_path / "state"
    async with running_daemon(toml, state) as daemon:
        stats = daemon.services.stats["orders"]
        await daemon.wait_for(lambda: stats.processed == 3, what="3 messages through the chain")
        await daemon.wait_delivered("orders", 1)
        assert stats.dropped == 2
    async with running_daemon(toml, state) as daemon:
        stats = daemon.services.stats["orders"]
        await daemon.wait_for(lambda: stats.processed == 3, what="3 more messages")
        assert stats.dropped == 3
    assert [json.loads(line)["body"] for line in out.read_text().splitlines()] == [{"order": 7}]


class FailOnce(Middleware):
    """Fails each message the first time it sees it, as a lookup during an outage would."""

    failed: set[str] = set()

    async def __call__(self, message: Message, call_next: Next) -> None:
        if message.id not in self.failed:
            self.failed.add(message.id)
            raise DeliveryError("the remote is down")
        await call_next(message)


class FailOncePlugin:
    @hookimpl
    def integrator_middleware(self, register: Any) -> None:
        register("t-fail-once", FailOnce)


async def test_a_message_retried_after_a_later_failure_is_delivered(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    toml = f"""
    [routes.orders]
    retry = {{ initial = "5ms", max = "5ms" }}
    source = {{ type = "timer", interval = "1h", count = 1, body = {{ order = 7 }} }}
    middleware = [
      {{ type = "dedupe", key = "body.order", window = "1h" }},
      {{ type = "t-fail-once" }},
    ]
    sinks = [{{ type = "file", path = "{out}" }}]
    """
    async with run_route(toml, FailOncePlugin()) as daemon:
        await daemon.wait_delivered("orders", 1)
        assert daemon.services.stats["orders"].dropped == 0
