"""The engine: middleware onion, per-sink isolation, retries, DLQ, supervision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from integrator import (
    DeliveryError,
    Intake,
    Message,
    Middleware,
    Next,
    Reject,
    Sink,
    Source,
    hookimpl,
)

# -- test components -----------------------------------------------------------------------


class ListOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    bodies: list[Any] = []


class ListSource(Source):
    """Emits its configured bodies once, then idles."""

    Options = ListOptions

    async def run(self, intake: Intake, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await intake.submit(
            [Message(body=b, id=f"m{i}") for i, b in enumerate(self.options.bodies)]
        )
        await anyio.sleep_forever()


CRASHES: dict[str, int] = {}


class CrashingSource(Source):
    """Crashes twice, then emits one message: the supervisor must keep restarting it."""

    async def run(self, intake: Intake, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        CRASHES["count"] = CRASHES.get("count", 0) + 1
        if CRASHES["count"] <= 2:
            raise RuntimeError(f"crash number {CRASHES['count']}")
        await intake.submit([Message(body={"survived": CRASHES["count"]})])
        await anyio.sleep_forever()


class Split(Middleware):
    async def __call__(self, message: Message, call_next: Next) -> None:
        for i, item in enumerate(message.body["items"]):
            await call_next(message.evolve(body=item, id=f"{message.id}:{i}"))


class Observe(Middleware):
    SEEN: list[str] = []

    async def __call__(self, message: Message, call_next: Next) -> None:
        Observe.SEEN.append(f"before {message.id}")
        await call_next(message)
        Observe.SEEN.append(f"after {message.id}")


class RejectOdd(Middleware):
    async def __call__(self, message: Message, call_next: Next) -> None:
        if message.body["n"] % 2:
            raise Reject(f"odd number {message.body['n']}")
        await call_next(message)


class Unstorable(Middleware):
    """Passes on an output holding a value no store format can hold, for n == 2."""

    async def __call__(self, message: Message, call_next: Next) -> None:
        if message.body["n"] == 2:
            message = message.evolve(body={"n": 2, "handle": object()})
        await call_next(message)


class ScribbleThenReject(Middleware):
    """Changes the message in place, then gives up on it."""

    async def __call__(self, message: Message, call_next: Next) -> None:
        message.body["scribbled"] = object()
        raise Reject("scribbled on")


class FlakyOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    fail_times: int = 1
    retriable: bool = True


class FlakySink(Sink):
    """Fails the first ``fail_times`` deliveries of each message."""

    Options = FlakyOptions
    ATTEMPTS: dict[str, int] = {}
    DELIVERED: list[str] = []

    async def deliver(self, message: Message) -> None:
        count = FlakySink.ATTEMPTS[message.id] = FlakySink.ATTEMPTS.get(message.id, 0) + 1
        if count <= self.options.fail_times:
            raise DeliveryError(f"flaky failure {count}", retriable=self.options.retriable)
        FlakySink.DELIVERED.append(message.id)


class BrokenSink(Sink):
    async def deliver(self, message: Message) -> None:
        raise DeliveryError("remote is down")


class TestPlugin:
    @hookimpl
    def integrator_sources(self, register: Any) -> None:
        register("list", ListSource)
        register("crashing", CrashingSource)

    @hookimpl
    def integrator_middleware(self, register: Any) -> None:
        register("t-split", Split)
        register("observe", Observe)
        register("reject-odd", RejectOdd)
        register("unstorable", Unstorable)
        register("scribble-then-reject", ScribbleThenReject)

    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        register("flaky", FlakySink)
        register("broken", BrokenSink)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- tests ------------------------------------------------------------------------------------


async def test_a_message_flows_from_source_through_middleware_to_every_sink(
    run_route, tmp_path: Path
) -> None:
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [{{ items = [1, 2, 3] }}] }}
    middleware = [{{ type = "t-split" }}]
    sinks = [
        {{ type = "file", path = "{out_a}", name = "a", concurrency = 1 }},
        {{ type = "file", path = "{out_b}", name = "b", concurrency = 1 }},
    ]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_delivered("r", 3)
    assert [m["body"] for m in lines(out_a)] == [1, 2, 3]
    assert [m["id"] for m in lines(out_b)] == ["m0:0", "m0:1", "m0:2"]


async def test_a_middleware_wraps_the_rest_of_the_chain(run_route, tmp_path: Path) -> None:
    Observe.SEEN.clear()
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [{{ items = ["x"] }}] }}
    middleware = [{{ type = "observe" }}, {{ type = "t-split" }}]
    sinks = [{{ type = "file", path = "{tmp_path / "o.jsonl"}" }}]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_delivered("r", 1)
    assert Observe.SEEN == ["before m0", "after m0"]


async def test_a_dropped_message_reaches_no_sink(run_route, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [1, 2] }}
    middleware = [{{ type = "drop" }}]
    sinks = [{{ type = "file", path = "{out}" }}]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_for(lambda: d.services.stats["r"].dropped == 2, what="two drops")
        await d.wait_for(lambda: d.services.store.pending() == 0, what="an empty store")
    assert lines(out) == []


async def test_a_rejected_message_goes_to_the_dlq_and_the_rest_flow(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [{{ n = 1 }}, {{ n = 2 }}, {{ n = 3 }}, {{ n = 4 }}] }}
    middleware = [{{ type = "reject-odd" }}]
    sinks = [{{ type = "file", path = "{out}", concurrency = 1 }}]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_delivered("r", 2)
        dead = await d.services.store.dlq_list(route="r")
    assert [m["body"]["n"] for m in lines(out)] == [2, 4]
    assert sorted(e.message.body["n"] for e in dead) == [1, 3]
    assert {e.last_error for e in dead} == {"odd number 1", "odd number 3"}
    assert all(e.sink == "" and e.attempts == 1 for e in dead)


async def test_an_output_that_cannot_be_stored_is_dead_lettered_and_the_rest_flow(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [{{ n = 1 }}, {{ n = 2 }}, {{ n = 3 }}] }}
    middleware = [{{ type = "unstorable" }}]
    sinks = [{{ type = "file", path = "{out}", concurrency = 1 }}]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_delivered("r", 2)
        [dead] = await d.services.store.dlq_list(route="r")
    assert sorted(m["body"]["n"] for m in lines(out)) == [1, 3]
    assert dead.message.body == {"n": 2}
    assert "cannot be stored" in dead.last_error


async def test_a_dead_letter_keeps_the_message_as_stored_not_as_a_middleware_left_it(
    run_route,
) -> None:
    toml = """
    [routes.r]
    source = { type = "list", bodies = [{ n = 1 }] }
    middleware = [{ type = "scribble-then-reject" }]
    sinks = [{ type = "stdout" }]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_for(lambda: d.services.stats["r"].dead == 1, what="a dead letter")
        [dead] = await d.services.store.dlq_list(route="r")
    assert dead.message.body == {"n": 1}
    assert dead.last_error == "scribbled on"


async def test_a_retriable_failure_is_retried_until_delivered(run_route) -> None:
    FlakySink.ATTEMPTS.clear()
    FlakySink.DELIVERED.clear()
    toml = """
    [routes.r]
    source = { type = "list", bodies = ["a", "b"] }
    sinks = [{ type = "flaky", fail_times = 2 }]
    retry = { max_attempts = 5, initial = "10ms", max = "20ms" }
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_delivered("r", 2)
        assert d.services.stats["r"].sinks["flaky"].failed == 4
    assert sorted(FlakySink.DELIVERED) == ["m0", "m1"]
    assert FlakySink.ATTEMPTS == {"m0": 3, "m1": 3}


async def test_exhausted_attempts_go_to_the_dlq_with_first_and_last_error(run_route) -> None:
    FlakySink.ATTEMPTS.clear()
    toml = """
    [routes.r]
    source = { type = "list", bodies = ["a"] }
    sinks = [{ type = "flaky", fail_times = 10 }]
    retry = { max_attempts = 3, initial = "5ms", max = "10ms" }
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_for(
            lambda: d.services.stats["r"].sinks["flaky"].dead == 1, what="a dead letter"
        )
        (entry,) = await d.services.store.dlq_list()
    assert (entry.route, entry.sink, entry.attempts) == ("r", "flaky", 3)
    assert entry.first_error == "flaky failure 1"
    assert entry.last_error == "flaky failure 3"


async def test_a_non_retriable_failure_goes_straight_to_the_dlq(run_route) -> None:
    FlakySink.ATTEMPTS.clear()
    toml = """
    [routes.r]
    source = { type = "list", bodies = ["a"] }
    sinks = [{ type = "flaky", fail_times = 1, retriable = false }]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_for(
            lambda: d.services.stats["r"].sinks["flaky"].dead == 1, what="a dead letter"
        )
    assert FlakySink.ATTEMPTS == {"m0": 1}


async def test_a_failing_sink_neither_blocks_nor_duplicates_another(
    run_route, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [1, 2, 3] }}
    sinks = [{{ type = "broken" }}, {{ type = "file", path = "{out}" }}]
    retry = {{ max_attempts = 1000, initial = "50ms", max = "50ms" }}
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_delivered("r", 3, sink="file")
        await d.wait_for(lambda: d.services.store.pending() == 3, what="the file's records gone")
        await anyio.sleep(0.2)  # give a duplicate the chance to appear
        depths = await d.services.store.depths()
    assert sorted(m["body"] for m in lines(out)) == [1, 2, 3]
    assert depths == {("r", "broken"): 3}


async def test_a_crashing_source_is_restarted_while_other_routes_flow(
    run_route, tmp_path: Path
) -> None:
    CRASHES.clear()
    healthy_out, crashing_out = tmp_path / "healthy.jsonl", tmp_path / "crashing.jsonl"
    toml = f"""
    [routes.healthy]
    source = {{ type = "timer", interval = "20ms" }}
    sinks = [{{ type = "file", path = "{healthy_out}" }}]

    [routes.crashy]
    source = {{ type = "crashing" }}
    sinks = [{{ type = "file", path = "{crashing_out}" }}]
    """
    async with run_route(toml, TestPlugin()) as d:
        health = d.services.health.component("crashy/source")
        await d.wait_for(lambda: health.restarts >= 1, what="a restart")
        assert health.last_error == "RuntimeError: crash number 1"
        await d.wait_delivered("crashy", 1, timeout=15)
        assert health.restarts == 2
        assert health.state == "running"
        await d.wait_delivered("healthy", 5)
    assert lines(crashing_out)[0]["body"] == {"survived": 3}


async def test_undelivered_work_survives_a_restart(tmp_path: Path) -> None:
    from integrator.testing import running_daemon

    FlakySink.ATTEMPTS.clear()
    FlakySink.DELIVERED.clear()
    state = tmp_path / "state"
    first = """
    [routes.r]
    source = { type = "list", bodies = ["kept"] }
    sinks = [{ type = "flaky", fail_times = 1 }]
    retry = { max_attempts = 5, initial = "1h", max = "1h" }
    """
    async with running_daemon(first, state, TestPlugin()) as d:
        await d.wait_for(lambda: d.services.stats["r"].sinks["flaky"].failed == 1, what="a failure")
    # Same route, but now the retry is due at once: the daemon picks it up from the store.
    second = first.replace('bodies = ["kept"]', "bodies = []").replace('"1h"', '"1ms"')
    store_path = state / "integrator.db"
    assert store_path.exists()
    import sqlite3

    with sqlite3.connect(store_path) as conn:
        conn.execute("UPDATE deliveries SET next_at = 0")
    async with running_daemon(second, state, TestPlugin()) as d:
        await d.wait_delivered("r", 1)
    assert FlakySink.DELIVERED == ["m0"]


class Choose(Middleware):
    """Sends even numbers to sink "even", odd to "odd", and 0 to both."""

    async def __call__(self, message: Message, call_next: Next) -> None:
        n = message.body
        targets = ["even", "odd"] if n == 0 else (["even"] if n % 2 == 0 else ["odd"])
        await call_next(
            message.evolve(attributes={**message.attributes, "integrator.sinks": targets})
        )


class ChoosePlugin:
    @hookimpl
    def integrator_middleware(self, register: Any) -> None:
        register("t-choose", Choose)


async def test_the_chain_can_choose_the_sinks_of_a_message(run_route, tmp_path: Path) -> None:
    even, odd = tmp_path / "even.jsonl", tmp_path / "odd.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [0, 1, 2, 3] }}
    middleware = [{{ type = "t-choose" }}]
    sinks = [{{ type = "file", path = "{even}", name = "even" }}, {{ type = "file", path = "{odd}", name = "odd" }}]
    """
    async with run_route(toml, TestPlugin(), ChoosePlugin()) as d:
        await d.wait_delivered("r", 2)
    assert sorted(m["body"] for m in lines(even)) == [0, 2]
    assert sorted(m["body"] for m in lines(odd)) == [0, 1, 3]


async def test_exhausted_attempts_go_to_the_fallback_sink(run_route, tmp_path: Path) -> None:
    out = tmp_path / "fallback.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = ["a", "b"] }}
    sinks = [
        {{ type = "broken", fallback = "spare", retry = {{ max_attempts = 2, initial = "5ms", max = "5ms" }} }},
        {{ type = "file", path = "{out}", name = "spare" }},
    ]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_for(lambda: len(lines(out)) == 4, what="4 lines: 2 direct, 2 handed over")
        assert d.services.stats["r"].sinks["broken"].rerouted == 2
        assert await d.services.store.dlq_count() == 0


async def test_an_open_breaker_hands_deliveries_to_the_fallback(run_route, tmp_path: Path) -> None:
    out = tmp_path / "fallback.jsonl"
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [1, 2, 3, 4, 5, 6] }}
    sinks = [
        {{ type = "broken", fallback = "spare", concurrency = 1, breaker = {{ failure_threshold = 2, cooldown = "1h" }}, retry = {{ max_attempts = 100, initial = "1ms", max = "1ms" }} }},
        {{ type = "file", path = "{out}", name = "spare", concurrency = 1 }},
    ]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_for(lambda: len(lines(out)) == 12, what="every message also via the fallback")
        broken = d.services.stats["r"].sinks["broken"]
        assert broken.rerouted == 6
        assert broken.failed <= 3, "after the breaker opened, no attempt was burned"


def test_a_fallback_must_name_another_sink(tmp_path: Path) -> None:
    from integrator.config import parse_config
    from integrator.errors import ConfigError
    from integrator.testing import make_registry

    _, registry = make_registry()
    text = '[routes.r]\nsource = { type = "timer" }\nsinks = [{ type = "stdout", fallback = "nope" }]\n'
    try:
        parse_config(text, tmp_path / "c.toml", registry)
    except ConfigError as err:
        assert (
            "routes.r.sinks[0].fallback: expected the name of another sink of this route (none), found 'nope'"
            in str(err)
        )
    else:
        raise AssertionError("accepted a fallback to nowhere")


class RecordingSink(Sink):
    CALLS: list[Message] = []

    async def deliver(self, message: Message) -> None:
        RecordingSink.CALLS.append(message)


class BatchPlugin:
    @hookimpl
    def integrator_sinks(self, register: Any) -> None:
        register("t-recording", RecordingSink)


async def test_a_batching_sink_gets_arrays_of_bodies(run_route) -> None:
    RecordingSink.CALLS.clear()
    toml = """
    [routes.r]
    source = { type = "list", bodies = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }
    sinks = [{ type = "t-recording", concurrency = 1, batch = { max_count = 4, max_wait = "50ms" } }]
    """
    async with run_route(toml, TestPlugin(), BatchPlugin()) as d:
        await d.wait_delivered("r", 10)
        await d.wait_for(lambda: d.services.store.pending() == 0, what="deliveries recorded")
    assert [m.body for m in RecordingSink.CALLS] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    first = RecordingSink.CALLS[0]
    assert first.attributes["batch_ids"] == ["m0", "m1", "m2", "m3"]
    assert first.id.startswith("batch-") and first.id.endswith("-4")


async def test_a_partial_batch_leaves_after_max_wait(run_route) -> None:
    RecordingSink.CALLS.clear()
    toml = """
    [routes.r]
    source = { type = "list", bodies = ["only"] }
    sinks = [{ type = "t-recording", batch = { max_count = 100, max_wait = "20ms" } }]
    """
    async with run_route(toml, TestPlugin(), BatchPlugin()) as d:
        await d.wait_delivered("r", 1, timeout=5)
    assert [m.body for m in RecordingSink.CALLS] == [["only"]]


async def test_a_failed_batch_retries_every_member(run_route) -> None:
    FlakySink.ATTEMPTS.clear()
    FlakySink.DELIVERED.clear()
    toml = """
    [routes.r]
    source = { type = "list", bodies = ["a", "b", "c"] }
    sinks = [{ type = "flaky", fail_times = 1, concurrency = 1, batch = { max_count = 3, max_wait = "200ms" }, retry = { initial = "10ms", max = "10ms" } }]
    """
    async with run_route(toml, TestPlugin()) as d:
        await d.wait_delivered("r", 3)
        stats = d.services.stats["r"].sinks["flaky"]
        assert stats.failed == 3, "each member was rescheduled once"
    (batch_id,) = set(FlakySink.DELIVERED)
    assert FlakySink.ATTEMPTS[batch_id] == 2, "the retried batch kept its id"


def test_the_batch_id_depends_only_on_its_members() -> None:
    from integrator.engine.route import batch_id

    assert batch_id(["a", "b"]) == batch_id(["a", "b"])
    assert batch_id(["a", "b"]) != batch_id(["b", "a"])


class _Libc:
    """A C library's ``malloc_trim``, recorded."""

    def __init__(self) -> None:
        self.trims: list[int] = []

    def malloc_trim(self, pad: int) -> int:
        self.trims.append(pad)
        return 1


async def test_once_ready_the_daemon_hands_start_ups_freed_heap_back_to_the_os(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integrator.engine import daemon as daemon_module
    from integrator.testing import running_daemon

    libc = _Libc()
    monkeypatch.setattr(daemon_module.ctypes, "CDLL", lambda name: libc)
    toml = f"""
    [routes.r]
    source = {{ type = "list", bodies = [] }}
    sinks = [{{ type = "file", path = "{tmp_path / "o.jsonl"}" }}]
    """
    async with running_daemon(toml, tmp_path / "state", TestPlugin()):
        assert libc.trims == [0]


def test_without_malloc_trim_the_daemon_keeps_its_heap_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from integrator.engine import daemon as daemon_module

    monkeypatch.setattr(daemon_module.ctypes, "CDLL", lambda name: object())  # musl, macOS
    daemon_module._return_free_memory()
